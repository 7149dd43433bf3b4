//! The harness shared by the tests that run `sspr-fleet serve` processes against the Graph
//! simulator (`engine_processes.rs`, `faults.rs`): the simulated fleet, the processes and their
//! settings, the test's API client, and the checks of a finished rollout (end state in the
//! simulator, no write applied twice, every job succeeded, each transition recorded once).
//!
//! Each test binary uses only part of it.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection;
use sspr_graph_sim::{
    Enablement, Faults, GraphSim, LegacySspr, RunningSim, Scenario, ScriptedFault,
    scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_sspr-fleet");

/// The display name of the scope group the rollouts create.
pub const PILOT_GROUP: &str = "SSPR pilot (sspr-fleet)";
/// Users per simulated tenant.
pub const USERS: u64 = 25;
/// `engine.step_attempts`, as configured for the processes.
pub const STEP_ATTEMPTS: i32 = 6;
/// The events a completed tenant records once each, in this order.
pub const STEP_EVENTS: [&str; 9] = [
    "admitted",
    "preflight_passed",
    "pilot_started",
    "scope_group_ready",
    "pilot_applied",
    "pilot_verified",
    "gate_passed",
    "all_applied",
    "completed",
];

/// What kind of tenant a scenario entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Licensed for SSPR (Business Premium, E3, E5, P1 or P2 in turn).
    Ready,
    /// Business Standard: no dynamic groups, so the daemon keeps the scope group's members.
    CloudOnly,
    /// Business Basic: blocked at preflight with `license_missing`.
    Unlicensed,
    /// A new group is invisible to reads for 2 seconds.
    SlowReplication,
    /// A few 429s with `Retry-After: 1` first, then 5 % of requests answered 503.
    Throttled,
    /// Licensed, with no faults in the scenario: the test injects them at run time.
    Stormy,
}

/// The Entra tenant id of scenario entry `i` of a fleet whose ids start with `prefix`.
pub fn entra(prefix: &str, i: usize) -> String {
    format!("{prefix}-0000-4000-8000-{i:012}")
}

/// A scenario of `kinds.len()` tenants of [`USERS`] users each.
pub fn scenario(prefix: &str, kinds: &[Kind]) -> String {
    let mut s = String::from("seed = 7\n");
    for (i, kind) in kinds.iter().enumerate() {
        let licence = match kind {
            Kind::CloudOnly => "business_standard",
            Kind::Unlicensed => "business_basic",
            _ => ["business_premium", "e3", "e5", "p1", "p2"][i % 5],
        };
        s.push_str(&format!(
            "[[tenants]]\nid = \"{}\"\nname = \"Tenant {i:02}\"\n\
             domain = \"t{i:02}.onmicrosoft.com\"\nusers = {USERS}\nlicence = \"{licence}\"\n",
            entra(prefix, i)
        ));
        match kind {
            Kind::Throttled => s.push_str(
                "[tenants.faults]\nrate_503 = 0.05\nretry_after_503_secs = 1\n\
                 script = [{ status = 429, retry_after = 1 }, { status = 429, retry_after = 1 }, \
                 { status = 429, retry_after = 1 }]\n",
            ),
            Kind::SlowReplication => s.push_str("[tenants.faults]\nreplication_delay_secs = 2\n"),
            _ => {}
        }
    }
    s
}

/// The simulator, serving on its own port for one test.
pub struct Sim {
    pub sim: GraphSim,
    pub running: RunningSim,
}

impl Sim {
    pub fn start(prefix: &str, kinds: &[Kind]) -> Self {
        let text = scenario(prefix, kinds);
        let scenario = Scenario::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let sim = GraphSim::from_scenario(&scenario).unwrap();
        let running = sim.serve(std::net::TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
        Self { sim, running }
    }
}

/// Where the processes keep their files, which database and Graph they use, and the settings
/// of the test.
pub struct Env {
    pub data: PathBuf,
    pub work: PathBuf,
    pub database_url: String,
    pub graph: String,
    /// More `SSPR_FLEET_*` settings, applied last.
    pub extra: Vec<(String, String)>,
}

impl Env {
    /// Settings over a SQLite file `sspr-fleet.db` in `data`, with no extra settings (the
    /// first process generates the master key in `data`; later ones load it).
    pub fn sqlite(data: &Path, work: &Path, graph: String) -> Self {
        Env {
            data: data.to_owned(),
            work: work.to_owned(),
            database_url: format!("sqlite://{}", data.join("sspr-fleet.db").display()),
            graph,
            extra: Vec::new(),
        }
    }

    /// This test's settings as `SSPR_FLEET_*` variables: fast engine pacing, a 3 second lease
    /// unless `extra` says otherwise, no background verification, JSON logs; `extra` last.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = [
            ("SSPR_FLEET_DATA_DIR", self.data.display().to_string()),
            ("SSPR_FLEET_DATABASE_URL", self.database_url.clone()),
            ("SSPR_FLEET_LISTEN", "127.0.0.1:0".into()),
            ("SSPR_FLEET_GRAPH_URL", self.graph.clone()),
            ("SSPR_FLEET_LOGIN_URL", self.graph.clone()),
            ("SSPR_FLEET_PORTAL_URL", self.graph.clone()),
            ("SSPR_FLEET_LOG", "info,sqlx=warn,actix_server=warn".into()),
            ("SSPR_FLEET_LOG_FORMAT", "json".into()),
            ("SSPR_FLEET_API__WORKERS", "2".into()),
            ("SSPR_FLEET_DATABASE__MAX_CONNECTIONS", "4".into()),
            ("SSPR_FLEET_REGISTRY__BACKGROUND_VERIFY", "false".into()),
            ("SSPR_FLEET_ENGINE__WAIT_POLL_MS", "150".into()),
            ("SSPR_FLEET_ENGINE__ADVANCE_MS", "150".into()),
            ("SSPR_FLEET_ENGINE__IDLE_POLL_MS", "100".into()),
            ("SSPR_FLEET_ENGINE__RETRY_BASE_MS", "200".into()),
            ("SSPR_FLEET_ENGINE__RETRY_MAX_MS", "2000".into()),
            ("SSPR_FLEET_ENGINE__STEP_ATTEMPTS", STEP_ATTEMPTS.to_string()),
            ("SSPR_FLEET_ENGINE__LEASE_SECS", "3".into()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        vars.extend(self.extra.iter().cloned());
        vars
    }

    /// The binary with this test's settings only (none from the caller's environment): fast
    /// engine pacing, a 3 second lease unless `extra` says otherwise, no background
    /// verification, JSON logs.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(&self.work);
        for (name, _) in std::env::vars() {
            if name.starts_with("SSPR_FLEET_") || name.starts_with("OTEL_") {
                cmd.env_remove(name);
            }
        }
        for (name, value) in self.settings() {
            cmd.env(name, value);
        }
        cmd
    }

    /// Runs a CLI command to completion, which must succeed; returns its stdout.
    pub async fn cli(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::from(self.command()).args(args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "sspr-fleet {}: {:?}\n{stderr}", args.join(" "), out.status);
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts `serve` with its output in `<work>/<name>.log`; returns once it serves.
    pub async fn serve(&self, name: &str) -> Daemon {
        let log = self.work.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command()
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut daemon = Daemon { child, base: String::new(), log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = daemon.log_text();
            let addr = text.lines().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                (v["message"] == "serving the API")
                    .then(|| v["addr"].as_str().map(str::to_owned))?
            });
            if let Some(addr) = addr {
                daemon.base = format!("http://{addr}");
                return daemon;
            }
            assert!(daemon.child.try_wait().unwrap().is_none(), "{name} exited early:\n{text}");
            assert!(Instant::now() < deadline, "{name} did not start in time:\n{text}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A running `serve`, killed if the test ends (or fails) before it is stopped.
pub struct Daemon {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (`-KILL`, `-TERM`) and waits for the process to exit.
    pub async fn signal(&mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args([signal, pid.as_str()]).status().unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve {pid} did not exit after {signal}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown of any kind, jobs left running under their lease.
    pub async fn kill(&mut self) {
        let status = self.signal("-KILL").await;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }

    /// SIGTERM, which must end in a clean exit.
    pub async fn terminate(&mut self) {
        let status = self.signal("-TERM").await;
        assert!(status.success(), "serve {} after SIGTERM: {status:?}", self.pid());
    }
}

/// The test's HTTP client, with the admin key.
pub struct Api {
    pub http: reqwest::Client,
    pub key: String,
}

impl Api {
    pub fn new(key: &str) -> Self {
        let http =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
        Self { http, key: key.trim().to_owned() }
    }

    /// Sends a request to the process at `base`; the answer must have status `expected`.
    pub async fn send(
        &self,
        method: Method,
        base: &str,
        path: &str,
        body: Option<&Value>,
        expected: u16,
    ) -> Value {
        let mut req =
            self.http.request(method.clone(), format!("{base}{path}")).bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.unwrap_or_else(|e| panic!("{method} {base}{path}: {e}"));
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(status, expected, "{method} {base}{path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn get(&self, base: &str, path: &str) -> Value {
        self.send(Method::GET, base, path, None, 200).await
    }

    pub async fn post(&self, base: &str, path: &str, body: &Value, expected: u16) -> Value {
        self.send(Method::POST, base, path, Some(body), expected).await
    }

    /// Onboards (and verifies) every tenant of the scenario; returns their ids.
    pub async fn onboard(&self, base: &str, prefix: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let body = json!({
                "entra_tenant": entra(prefix, i), "display_name": format!("Tenant {i:02}"),
                "tags": ["fleet"],
                "credentials": {"kind": "client_secret", "client_id": DEFAULT_CLIENT_ID,
                                "client_secret": DEFAULT_CLIENT_SECRET},
            });
            let t = self.post(base, "/v1/tenants?verify=true", &body, 201).await;
            ids.push(t["id"].as_str().unwrap().to_owned());
        }
        ids
    }

    /// Plays the technician: for every open scope task, sets the simulator's legacy SSPR policy
    /// to "Selected = the task's group" and attests the task. The tasks are listed through
    /// `bases[0]` and each attestation goes to the next of `bases` in turn (`turn` counts
    /// them). A task is left for a later round when `now` says no (given the task), or when
    /// its group has not replicated yet, as the portal would refuse it too. Returns how many
    /// tasks were attested.
    pub async fn attest_open_tasks(
        &self,
        bases: &[&str],
        turn: &mut usize,
        sim: &GraphSim,
        entra_of: &BTreeMap<String, String>,
        mut now: impl FnMut(&Value) -> bool,
    ) -> usize {
        let tasks = self.get(bases[0], "/v1/tasks?state=open&limit=500").await;
        let mut attested = 0;
        for task in tasks["items"].as_array().unwrap() {
            if task["kind"] != "scope_selected" || !now(task) {
                continue;
            }
            let entra = &entra_of[task["tenant_id"].as_str().unwrap()];
            let group = task["instructions"]["group"]["id"].as_str().unwrap().to_owned();
            let policy = LegacySspr {
                enablement: Enablement::Selected,
                group_id: Some(group),
                ..sim.legacy_sspr(entra).unwrap()
            };
            if sim.set_legacy_sspr(entra, policy).is_err() {
                continue;
            }
            let base = bases[*turn % bases.len()];
            *turn += 1;
            let path = format!("/v1/tasks/{}/attest", task["id"].as_str().unwrap());
            self.post(base, &path, &json!({"note": "set by the test"}), 200).await;
            attested += 1;
        }
        attested
    }

    /// Every event of a rollout's history, oldest first, paging through `/history`.
    pub async fn history(&self, base: &str, rollout: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after: Option<i64> = None;
        loop {
            let mut path = format!("/v1/rollouts/{rollout}/history?limit=1000");
            if let Some(after) = after {
                path.push_str(&format!("&after={after}"));
            }
            let page = self.get(base, &path).await;
            all.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_after"].as_i64() {
                Some(next) => after = Some(next),
                None => return all,
            }
        }
    }
}

/// The rollout of both tests: canary of 2, then batches of 4, at most 4 tenants in flight,
/// no soak, no approval, the registration campaign on, two pilot users per tenant, SMS managed
/// (asked for: by default it is left as found) so that every managed method is followed.
pub fn rollout_spec() -> Value {
    json!({
        "name": "SSPR across processes",
        "policy": {
            "methods": {"sms": true},
            "pilot_group": {"name": PILOT_GROUP,
                            "members": ["user00003@{domain}", "user00004@{domain}"]},
            "registration_campaign": {"enabled": true, "snooze_days": 2},
        },
        "selector": {"tags": ["fleet"]},
        "waves": {
            "canary": {"kind": "first", "count": 2},
            "batches": {"kind": "count", "size": 4},
            "max_in_flight": 4,
            "failure_budget": {"kind": "percent", "percent": 50},
        },
        "gates": {"soak_minutes": 0, "approval": "none"},
    })
}

/// The includeTargets ids of a method configuration.
pub fn targets(method: &Value) -> Vec<String> {
    method["includeTargets"]
        .as_array()
        .map(|a| a.iter().map(|t| t["id"].as_str().unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

/// A method configuration of a simulated tenant's state.
pub fn method<'a>(state: &'a Value, id: &str) -> &'a Value {
    state["authenticationMethodsPolicy"]["authenticationMethodConfigurations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"].as_str().is_some_and(|m| m.eq_ignore_ascii_case(id)))
        .unwrap_or_else(|| panic!("no method {id}"))
}

/// One tenant of a test: its id in sspr-fleet, in Entra, and its kind.
pub struct Tenant {
    pub id: String,
    pub entra: String,
    pub kind: Kind,
}

/// Asserts the end state of a completed rollout, through the API of the process at `base`
/// and in the simulator: every licensed tenant completed with the methods and the campaign on
/// for all users, exactly one scope group (created once) holding every user, each step event
/// recorded once; unlicensed tenants blocked with `license_missing` and never written to; the
/// rollout-wide events (waves, completion) once each. And no tenant received the same
/// successful write twice: a step, even one run again after a kill, reads what the tenant has
/// and writes only the difference.
pub async fn assert_end_state(
    api: &Api,
    base: &str,
    sim: &GraphSim,
    rollout: &str,
    tenants: &[Tenant],
) {
    let done = api.get(base, &format!("/v1/rollouts/{rollout}")).await;
    let unlicensed = tenants.iter().filter(|t| t.kind == Kind::Unlicensed).count() as u64;
    assert_eq!(done["state"], "completed", "{done}");
    assert!(done["finished_at"].is_string(), "{done}");
    assert_eq!(done["counts"]["completed"], tenants.len() as u64 - unlicensed, "{done}");
    assert_eq!(done["counts"]["blocked"], unlicensed, "{done}");
    assert_eq!(done["blocked_reasons"], json!({"license_missing": unlicensed}), "{done}");
    assert_eq!(done["failed_reasons"], json!({}), "{done}");

    // Rollout-wide events: every wave started once, the rollout completed once.
    let history = api.history(base, rollout).await;
    let rollout_wide = |kind: &str| {
        history
            .iter()
            .filter(|e| e["kind"] == kind && e["from_state"] != e["to_state"])
            .filter(|e| kind != "completed" || e["from_state"] == "running")
            .count()
    };
    assert_eq!(rollout_wide("completed"), 1, "the rollout completed more than once");
    let waves = done["wave_count"].as_u64().unwrap();
    let started = history.iter().filter(|e| e["kind"] == "wave_started").count() as u64;
    assert_eq!(started, waves - 1, "each wave after the first starts once");

    for (i, t) in tenants.iter().enumerate() {
        let what = format!("tenant {i} ({:?})", t.kind);
        let rt = api.get(base, &format!("/v1/rollouts/{rollout}/tenants/{}", t.id)).await;
        let state = sim.tenant_state(&t.entra).unwrap();
        let writes = sim.writes(&t.entra).unwrap();
        let kinds: Vec<&str> = rt["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
        let pilot_groups: Vec<&String> = state["groups"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, g)| g["displayName"] == PILOT_GROUP)
            .map(|(id, _)| id)
            .collect();
        let group_posts = writes
            .iter()
            .filter(|w| w.method == "POST" && w.path == "/groups" && w.status == 201)
            .count();
        let mut seen = BTreeSet::new();
        for w in writes.iter().filter(|w| (200..300).contains(&w.status)) {
            let write = (&w.method, &w.path, w.body.to_string());
            assert!(seen.insert(write), "{what} received the same write twice: {w:?}");
        }
        if t.kind == Kind::Unlicensed {
            assert_eq!(rt["state"], "blocked", "{what}: {rt}");
            assert_eq!(rt["reason"], "license_missing", "{what}: {rt}");
            assert!(writes.is_empty(), "{what}: a blocked tenant was written to: {writes:?}");
            assert!(pilot_groups.is_empty(), "{what}: {pilot_groups:?}");
            assert_eq!((count("admitted"), count("blocked")), (1, 1), "{what}: {kinds:?}");
            continue;
        }
        assert_eq!(rt["state"], "completed", "{what}: {rt}");
        for m in ["MicrosoftAuthenticator", "Sms", "Email"] {
            let cfg = method(&state, m);
            assert_eq!(cfg["state"], "enabled", "{m} in {what}");
            assert_eq!(targets(cfg), vec!["all_users"], "{m} in {what}");
        }
        let campaign = &state["authenticationMethodsPolicy"]["registrationEnforcement"]["authenticationMethodsRegistrationCampaign"];
        assert_eq!(campaign["state"], "enabled", "{what}: {campaign}");
        assert_eq!(state["legacySspr"]["enablement"], "selected", "{what}");
        if t.kind == Kind::Throttled {
            assert_eq!(state["faults"]["script"], json!([]), "{what}: scripted 429s not served");
        }

        // One scope group, created once, holding every user (by rule where the licence has
        // dynamic groups, else kept by sspr-fleet).
        let group_id = rt["scope_group_id"].as_str().unwrap();
        assert_eq!(pilot_groups, vec![group_id], "{what}: groups {}", state["groups"]);
        assert_eq!(group_posts, 1, "{what}: groups created: {group_posts}");
        let group = &state["groups"][group_id];
        assert_eq!(group["members"], USERS, "{what}: {group}");
        assert_eq!(group["dynamic"], t.kind != Kind::CloudOnly, "{what}: {group}");

        // Each step recorded once, in order (a re-run step finds its transition fenced).
        for kind in STEP_EVENTS {
            assert_eq!(count(kind), 1, "{what}: {kind} in {kinds:?}");
        }
        let positions: Vec<usize> =
            STEP_EVENTS.iter().map(|k| kinds.iter().position(|x| x == k).unwrap()).collect();
        assert!(positions.is_sorted(), "{what}: steps out of order: {kinds:?}");
    }
}

/// A job as stored.
#[derive(Debug, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub payload: String,
    pub state: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub claimed_by: Option<String>,
    pub last_error: Option<String>,
}

impl JobRow {
    /// Attempts that failed or were abandoned (a snooze, "run again later", adds one to both
    /// `attempt` and `max_attempts`, so it is not counted).
    pub fn extra_attempts(&self) -> i32 {
        let snoozes = self.max_attempts - STEP_ATTEMPTS;
        self.attempt - snoozes - 1
    }

    /// The process id in `claimed_by` (`worker-<pid>-<hex>`).
    pub fn pid(&self) -> Option<u32> {
        self.claimed_by.as_deref()?.strip_prefix("worker-")?.split('-').next()?.parse().ok()
    }
}

/// A tenant event as stored.
#[derive(Debug, sqlx::FromRow)]
pub struct EventRow {
    pub tenant_id: Option<String>,
    pub kind: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
}

/// The database the processes share, opened directly for assertions.
pub enum Db {
    Sqlite(String),
    Postgres(String),
}

pub const JOBS_SQL: &str = "SELECT id, kind, payload, state, attempt, max_attempts, claimed_by, \
                        last_error FROM jobs ORDER BY created_at, id";
pub const EVENTS_SQL: &str = "SELECT tenant_id, kind, from_state, to_state FROM rollout_events \
                          WHERE tenant_id IS NOT NULL ORDER BY seq";

impl Db {
    pub async fn jobs(&self) -> Vec<JobRow> {
        match self {
            Db::Sqlite(url) => {
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                let rows = sqlx::query_as(JOBS_SQL).fetch_all(&mut c).await.unwrap();
                c.close().await.unwrap();
                rows
            }
            Db::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                let rows = sqlx::query_as(JOBS_SQL).fetch_all(&mut c).await.unwrap();
                c.close().await.unwrap();
                rows
            }
        }
    }

    pub async fn events(&self) -> Vec<EventRow> {
        match self {
            Db::Sqlite(url) => {
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                let rows = sqlx::query_as(EVENTS_SQL).fetch_all(&mut c).await.unwrap();
                c.close().await.unwrap();
                rows
            }
            Db::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                let rows = sqlx::query_as(EVENTS_SQL).fetch_all(&mut c).await.unwrap();
                c.close().await.unwrap();
                rows
            }
        }
    }

    /// Waits until no job is queued or running (the finished rollout's last scheduler round
    /// and the no-op jobs of states already left run out), then returns every job.
    pub async fn settled_jobs(&self) -> Vec<JobRow> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let jobs = self.jobs().await;
            let open: Vec<&JobRow> =
                jobs.iter().filter(|j| matches!(j.state.as_str(), "queued" | "running")).collect();
            if open.is_empty() {
                return jobs;
            }
            assert!(Instant::now() < deadline, "jobs still open after completion: {open:#?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Asserts that every job succeeded with a sane number of attempts; returns the largest
/// `attempt` and the largest number of failed or abandoned attempts of one job.
pub fn assert_jobs_succeeded(jobs: &[JobRow]) -> (i32, i32) {
    let bad: Vec<&JobRow> = jobs.iter().filter(|j| j.state != "succeeded").collect();
    assert!(bad.is_empty(), "jobs that did not succeed: {bad:#?}");
    for j in jobs {
        assert!(j.attempt >= 1 && j.attempt <= j.max_attempts, "{j:?}");
        assert!((0..STEP_ATTEMPTS).contains(&j.extra_attempts()), "{j:?}");
    }
    let max_attempt = jobs.iter().map(|j| j.attempt).max().unwrap_or(0);
    let max_extra = jobs.iter().map(JobRow::extra_attempts).max().unwrap_or(0);
    (max_attempt, max_extra)
}

/// Asserts that each tenant left each state at most once: every transition is made by the
/// step job of the state it leaves, so a step (or an admission) that ran twice and recorded
/// twice shows up here. Self-transitions (`waiting`, `scope_group_ready`) are not counted.
pub fn assert_transitions_once(events: &[EventRow]) {
    let mut seen: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for e in events {
        let (Some(tenant), Some(from), Some(to)) = (&e.tenant_id, &e.from_state, &e.to_state)
        else {
            continue;
        };
        if from != to {
            seen.entry((tenant.as_str(), from.as_str())).or_default().push(e.kind.as_str());
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, kinds)| kinds.len() > 1).collect();
    assert!(twice.is_empty(), "tenants that left a state twice: {twice:?}");
}

/// Attests tasks as they appear (through `bases` in turn) and polls the rollout through
/// `bases[0]` until it is no longer running; returns the rollout.
pub async fn wait_finished(
    api: &Api,
    bases: &[&str],
    turn: &mut usize,
    sim: &GraphSim,
    entra_of: &BTreeMap<String, String>,
    rollout: &str,
    deadline: Instant,
) -> Value {
    loop {
        api.attest_open_tasks(bases, turn, sim, entra_of, |_| true).await;
        let r = api.get(bases[0], &format!("/v1/rollouts/{rollout}")).await;
        if r["state"] != "running" {
            return r;
        }
        assert!(Instant::now() < deadline, "the rollout did not finish in time: {r}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The faults of a [`Kind::Throttled`] tenant (also in its scenario entry).
pub fn throttling() -> Faults {
    let throttled = ScriptedFault { status: 429, retry_after: Some(1) };
    Faults {
        rate_503: 0.05,
        retry_after_503_secs: 1,
        script: vec![throttled; 3].into(),
        ..Faults::default()
    }
}

/// Sets the throttled tenants' faults again, so that the rollout meets the scripted 429s that
/// onboarding used up.
pub fn rearm_throttling(sim: &GraphSim, tenants: &[Tenant]) {
    for t in tenants.iter().filter(|t| t.kind == Kind::Throttled) {
        sim.set_faults(&t.entra, throttling()).unwrap();
    }
}

/// The tenants of a test, in scenario order.
pub fn tenants(prefix: &str, kinds: &[Kind], ids: &[String]) -> Vec<Tenant> {
    kinds
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (kind, id))| Tenant { id: id.clone(), entra: entra(prefix, i), kind: *kind })
        .collect()
}

/// Counts the lines of a JSON log whose message is `message`, and sums their `field`.
pub fn log_count(text: &str, message: &str, field: Option<&str>) -> (usize, u64) {
    let mut lines = 0;
    let mut sum = 0;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        if v["message"] == message {
            lines += 1;
            sum += field.and_then(|f| v[f].as_u64()).unwrap_or(0);
        }
    }
    (lines, sum)
}

/// The outcomes of the job attempts a process ran, from its log (`sspr_queue=debug`).
pub fn attempt_outcomes(text: &str) -> Vec<Value> {
    const OUTCOMES: [&str; 3] = ["job succeeded", "job runs again later", "job attempt failed"];
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| OUTCOMES.iter().any(|m| v["message"] == *m))
        .collect()
}

/// A PostgreSQL schema of this test's own, dropped when this goes away.
pub struct PgSchema {
    pub admin_url: String,
    pub schema: String,
}

impl PgSchema {
    /// Creates `t_<random>` through `admin_url`.
    pub async fn create(admin_url: &str) -> Self {
        let schema = format!("t_{:016x}{:08x}", rand::random::<u64>(), std::process::id());
        let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        Self { admin_url: admin_url.to_owned(), schema }
    }

    /// The URL with the schema as the search path.
    pub fn url(&self) -> String {
        let sep = if self.admin_url.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.admin_url, self.schema)
    }
}

impl Drop for PgSchema {
    /// Drops the schema (this may run inside the test's runtime).
    fn drop(&mut self) {
        let dropped = admin_sql_on_own_thread(
            &self.admin_url,
            vec![
                "SET lock_timeout = '5s'".into(),
                format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
            ],
        );
        if let Err(e) = dropped {
            eprintln!("warning: cannot drop the test schema {}: {e:?}", self.schema);
        }
    }
}

/// Runs `statements` through `admin_url` on a thread and runtime of their own, so that a
/// `Drop` running inside a test's runtime can clean up after it.
pub fn admin_sql_on_own_thread(admin_url: &str, statements: Vec<String>) -> anyhow::Result<()> {
    let url = admin_url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            for sql in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
            }
            conn.close().await?;
            anyhow::Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the cleanup thread panicked"))?
}
