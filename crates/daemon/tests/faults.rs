//! Fault injection around a running rollout; each test ends with the checks of
//! `common::assert_end_state` (the simulator's end state: methods and campaign on for all users,
//! one scope group created once and holding every member, blocked tenants never written to, no
//! successful write twice) and of the job table (every job succeeded, each tenant transition
//! recorded once).
//!
//! - Graph storms: tenants answer 503 with `Retry-After` and drop connections at high rates for
//!   a window while the rollout runs, then recover. No request may arrive early.
//! - PostgreSQL connection loss: every backend connection of the test's own database is
//!   terminated several times while the rollout runs (`pg_terminate_backend`). This is not a
//!   server restart (the server, its caches and its other databases stay up, and no connection
//!   attempt is refused meanwhile); it is the part of a restart a client sees: every connection
//!   it holds dies at once, in the middle of whatever transaction it was running.
//! - Clock jumps: an in-process daemon whose injected clock jumps forward by hours and back by
//!   minutes while the rollout runs.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use sqlx::Connection;
use sspr_graph_sim::Faults;

/// The faults of a tenant in a storm: 30 % of requests answered 503 with `Retry-After: 1`,
/// 10 % of connections dropped without an answer, a little latency.
fn storm() -> Faults {
    Faults {
        rate_503: 0.3,
        retry_after_503_secs: 1,
        rate_drop: 0.1,
        latency_ms: (5, 30),
        ..Faults::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_rides_out_graph_503_storms_and_dropped_connections() {
    const PREFIX: &str = "5f5f5f5f";
    /// Faults a stormy tenant must have been served before its storm ends (or it is done).
    const STORM_FAULTS: u64 = 8;
    let started = Instant::now();
    let kinds = [
        Kind::Ready,
        Kind::Stormy,
        Kind::Stormy,
        Kind::CloudOnly,
        Kind::Stormy,
        Kind::Unlicensed,
        Kind::Ready,
        Kind::Stormy,
    ];
    let sim = Sim::start(PREFIX, &kinds);
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let env = Env::sqlite(data.path(), work.path(), sim.running.base_url());
    let mut daemon = env.serve("serve").await;
    let api = Api::new(&env.cli(&["keys", "create", "--name", "test", "--role", "admin"]).await);
    let ids = api.onboard(&daemon.base, PREFIX, kinds.len()).await;
    let tenants = tenants(PREFIX, &kinds, &ids);
    let entra_of: BTreeMap<String, String> =
        tenants.iter().map(|t| (t.id.clone(), t.entra.clone())).collect();

    // The storm starts before the rollout, in every stormy tenant at once.
    let mut storming: BTreeMap<String, (u64, Instant)> = BTreeMap::new();
    for t in tenants.iter().filter(|t| t.kind == Kind::Stormy) {
        sim.sim.set_faults(&t.entra, storm()).unwrap();
        storming.insert(t.entra.clone(), (sim.sim.stats(&t.entra).unwrap().faults, Instant::now()));
    }
    let created = api.post(&daemon.base, "/v1/rollouts", &rollout_spec(), 201).await;
    let rollout = created["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut turn = 0;
    let mut served: BTreeMap<String, u64> = BTreeMap::new();
    let done = loop {
        // A tenant's storm ends once it has been served enough faults (counted from the start
        // of the rollout, so onboarding's clean requests do not count), or once the tenant is
        // done. Not on a timer: on a busy machine the last wave may start after any fixed time.
        let page =
            api.get(&daemon.base, &format!("/v1/rollouts/{rollout}/tenants?limit=100")).await;
        let finished: std::collections::BTreeSet<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| matches!(t["state"].as_str(), Some("completed" | "failed" | "blocked")))
            .filter_map(|t| entra_of.get(t["tenant_id"].as_str().unwrap()).cloned())
            .collect();
        storming.retain(|entra, (before, _since)| {
            let faults = sim.sim.stats(entra).unwrap().faults - *before;
            if faults >= STORM_FAULTS || finished.contains(entra) {
                sim.sim.set_faults(entra, Faults::default()).unwrap();
                served.insert(entra.clone(), faults);
                return false;
            }
            true
        });
        api.attest_open_tasks(&[&daemon.base], &mut turn, &sim.sim, &entra_of, |_| true).await;
        let r = api.get(&daemon.base, &format!("/v1/rollouts/{rollout}")).await;
        if r["state"] != "running" && storming.is_empty() {
            break r;
        }
        assert!(Instant::now() < deadline, "the rollout did not finish in time: {r}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    eprintln!("rollout finished after {:?}: {}; faults served {served:?}", started.elapsed(), done);

    // Every stormy tenant was in its storm while the rollout wrote to it.
    for (entra, faults) in &served {
        assert!(*faults >= 3, "{entra} saw only {faults} faults during its storm");
    }
    // Retry-After was honoured throughout: not one request came early.
    let total = sim.sim.total_stats();
    assert_eq!(total.early_requests, 0, "requests sent before Retry-After ran out: {total:?}");
    assert_end_state(&api, &daemon.base, &sim.sim, &rollout, &tenants).await;
    let db = Db::Sqlite(env.database_url.clone());
    let jobs = db.settled_jobs().await;
    let (max_attempt, max_extra) = assert_jobs_succeeded(&jobs);
    assert_transitions_once(&db.events().await);
    daemon.terminate().await;
    sim.running.stop().await;
    eprintln!(
        "{} jobs, max attempt {max_attempt}, max failed attempts of one job {max_extra}; {} \
         faults served in all; {:?}",
        jobs.len(),
        total.faults,
        started.elapsed()
    );
}

/// A PostgreSQL database of this test's own (so that terminating every connection of "the
/// current database" touches nothing but this test), dropped when this goes away.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin_url: &str) -> Self {
        let name = format!("sspr_faults_{:016x}{:08x}", rand::random::<u64>(), std::process::id());
        let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let mut url = reqwest::Url::parse(admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        Self { admin_url: admin_url.to_owned(), name, url: url.to_string() }
    }
}

impl Drop for PgDatabase {
    /// Drops the database (this may run inside the test's runtime).
    fn drop(&mut self) {
        let dropped = admin_sql_on_own_thread(
            &self.admin_url,
            vec![format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)],
        );
        if let Err(e) = dropped {
            eprintln!("warning: cannot drop the test database {}: {e:?}", self.name);
        }
    }
}

/// Terminates every other connection to the current database; returns how many.
async fn terminate_backends(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

/// `GET base + path` without the key; the status, or `None` when no answer came.
async fn status_of(http: &reqwest::Client, url: &str) -> Option<u16> {
    http.get(url).send().await.ok().map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_survives_postgres_dropping_every_connection_repeatedly() {
    const PREFIX: &str = "6f6f6f6f";
    /// Times every connection is terminated while the rollout runs.
    const ROUNDS: usize = 6;
    let Some(admin_url) = std::env::var("SSPR_FLEET_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .ok()
        .filter(|u| u.starts_with("postgres"))
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but neither SSPR_FLEET_TEST_DATABASE_URL nor DATABASE_URL is a PostgreSQL URL"
        );
        eprintln!(
            "\n*** SKIPPED a_rollout_survives_postgres_dropping_every_connection_repeatedly: no \
             PostgreSQL configured (set SSPR_FLEET_TEST_DATABASE_URL) ***\n"
        );
        return;
    };
    let started = Instant::now();
    let kinds = [
        Kind::Ready,
        Kind::Ready,
        Kind::CloudOnly,
        Kind::Throttled,
        Kind::Ready,
        Kind::SlowReplication,
        Kind::Unlicensed,
        Kind::Ready,
    ];
    // Declared before the process, so it is dropped after the process is killed.
    let database = PgDatabase::create(&admin_url).await;
    let sim = Sim::start(PREFIX, &kinds);
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let master_key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let env = Env {
        data: data.path().to_owned(),
        work: work.path().to_owned(),
        database_url: database.url.clone(),
        graph: sim.running.base_url(),
        extra: vec![("SSPR_FLEET_MASTER_KEY".into(), master_key)],
    };
    env.cli(&["migrate"]).await;
    let mut daemon = env.serve("serve").await;
    let api = Api::new(&env.cli(&["keys", "create", "--name", "test", "--role", "admin"]).await);
    let ids = api.onboard(&daemon.base, PREFIX, kinds.len()).await;
    let tenants = tenants(PREFIX, &kinds, &ids);
    let entra_of: BTreeMap<String, String> =
        tenants.iter().map(|t| (t.id.clone(), t.entra.clone())).collect();
    rearm_throttling(&sim.sim, &tenants);
    let created = api.post(&daemon.base, "/v1/rollouts", &rollout_spec(), 201).await;
    let rollout = created["id"].as_str().unwrap().to_owned();

    let mut killer = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let http =
        reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    let readyz = format!("{}/readyz", daemon.base);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rounds = 0;
    let mut terminated = Vec::new();
    let mut not_ready = 0;
    let mut turn = 0;
    let mut next = Instant::now() + Duration::from_millis(500);
    let done = loop {
        if rounds < ROUNDS && Instant::now() >= next {
            terminated.push(terminate_backends(&mut killer).await);
            rounds += 1;
            // The process stays up, and is ready again once its pool has new connections.
            let back = Instant::now() + Duration::from_secs(15);
            loop {
                match status_of(&http, &readyz).await {
                    Some(200) => break,
                    other => not_ready += usize::from(other.is_some()),
                }
                assert!(daemon.child.try_wait().unwrap().is_none(), "serve exited");
                assert!(Instant::now() < back, "/readyz did not recover after round {rounds}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            next = Instant::now() + Duration::from_millis(700);
        }
        // A request in flight when the connections die may fail; the next one must not.
        let r = api.get(&daemon.base, &format!("/v1/rollouts/{rollout}")).await;
        if r["state"] != "running" {
            break r;
        }
        api.attest_open_tasks(&[&daemon.base], &mut turn, &sim.sim, &entra_of, |_| true).await;
        assert!(Instant::now() < deadline, "the rollout did not finish in time: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    killer.close().await.unwrap();
    eprintln!(
        "rollout finished after {:?} and {rounds} rounds of terminations (connections \
         terminated per round {terminated:?}, /readyz not ready {not_ready} times): {}",
        started.elapsed(),
        done["counts"]
    );
    assert!(rounds >= 3, "only {rounds} rounds of terminations happened during the rollout");
    // Each round cut the daemon's pool (the test's own API calls leave it at least one).
    assert!(terminated.iter().all(|n| *n >= 1), "terminated per round: {terminated:?}");

    assert_end_state(&api, &daemon.base, &sim.sim, &rollout, &tenants).await;
    let db = Db::Postgres(env.database_url.clone());
    let jobs = db.settled_jobs().await;
    let (max_attempt, max_extra) = assert_jobs_succeeded(&jobs);
    assert_transitions_once(&db.events().await);
    let log = daemon.log_text();
    let losses: usize = [
        "job queue round failed",
        "job heartbeat failed",
        "cannot record job outcome",
        "job attempt failed",
    ]
    .iter()
    .map(|m| log_count(&log, m, None).0)
    .sum();
    daemon.terminate().await;
    sim.running.stop().await;
    eprintln!(
        "{} jobs, max attempt {max_attempt}, max failed attempts of one job {max_extra}; {losses} \
         queue rounds, heartbeats, outcomes or attempts failed on the way; {:?}",
        jobs.len(),
        started.elapsed()
    );
}

/// The wall clock shifted by an offset that the test changes: a system clock that jumps.
#[derive(Debug, Clone, Default)]
struct JumpingClock {
    offset_micros: Arc<AtomicI64>,
}

impl JumpingClock {
    fn jump(&self, by: TimeDelta) {
        self.offset_micros.fetch_add(by.num_microseconds().unwrap(), Ordering::SeqCst);
    }
}

impl sspr_domain::Clock for JumpingClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::microseconds(self.offset_micros.load(Ordering::SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_completes_while_the_clock_jumps_forward_by_hours_and_back_by_minutes() {
    const PREFIX: &str = "8f8f8f8f";
    let started = Instant::now();
    let kinds = [
        Kind::Ready,
        Kind::Ready,
        Kind::CloudOnly,
        Kind::Ready,
        Kind::SlowReplication,
        Kind::Unlicensed,
        Kind::Ready,
        Kind::Ready,
    ];
    let sim = Sim::start(PREFIX, &kinds);
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let env = Env::sqlite(data.path(), work.path(), sim.running.base_url());
    // The daemon in this process, as `serve` builds it, with the jumping clock.
    let clock = JumpingClock::default();
    let settings = sspr_fleet::settings::Settings::load_from(None, env.settings()).unwrap();
    let app = sspr_fleet::Application::build_with_clock(&settings, Arc::new(clock.clone()))
        .await
        .unwrap();
    let base = format!("http://{}", app.addr());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let api = Api::new(&env.cli(&["keys", "create", "--name", "test", "--role", "admin"]).await);
    let ids = api.onboard(&base, PREFIX, kinds.len()).await;
    let tenants = tenants(PREFIX, &kinds, &ids);
    let entra_of: BTreeMap<String, String> =
        tenants.iter().map(|t| (t.id.clone(), t.entra.clone())).collect();
    // A one-hour soak: only the forward jumps let the gates pass within the test.
    let mut spec = rollout_spec();
    spec["gates"]["soak_minutes"] = 60.into();
    let created = api.post(&base, "/v1/rollouts", &spec, 201).await;
    let rollout = created["id"].as_str().unwrap().to_owned();

    // Every 2 seconds the clock jumps 2 hours ahead, and a second later 10 minutes back.
    let mut forward = 0;
    let mut backward = 0;
    let mut next_jump = Instant::now() + Duration::from_secs(1);
    let mut ahead = false;
    let mut turn = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    let done = loop {
        if Instant::now() >= next_jump {
            if ahead {
                clock.jump(TimeDelta::minutes(-10));
                backward += 1;
            } else {
                clock.jump(TimeDelta::hours(2));
                forward += 1;
            }
            ahead = !ahead;
            next_jump = Instant::now() + Duration::from_secs(1);
        }
        api.attest_open_tasks(&[&base], &mut turn, &sim.sim, &entra_of, |_| true).await;
        let r = api.get(&base, &format!("/v1/rollouts/{rollout}")).await;
        if r["state"] != "running" {
            break r;
        }
        assert!(Instant::now() < deadline, "the rollout did not finish in time: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "rollout finished after {:?}, {forward} jumps forward, {backward} back: {}",
        started.elapsed(),
        done["counts"]
    );
    assert!(forward >= 2 && backward >= 1, "{forward} jumps forward, {backward} back");

    // No tenant failed on a deadline the jumps did not pass (168 hours), and none twice.
    assert_end_state(&api, &base, &sim.sim, &rollout, &tenants).await;
    let db = Db::Sqlite(env.database_url.clone());
    let jobs = db.settled_jobs().await;
    let (max_attempt, max_extra) = assert_jobs_succeeded(&jobs);
    assert_transitions_once(&db.events().await);
    // No job ran twice at once: nothing was killed, so a lease that "expired" could only have
    // been a live attempt's, taken over because the clock jumped past it.
    let rescued: Vec<&JobRow> =
        jobs.iter().filter(|j| j.last_error.as_deref() == Some("lease expired")).collect();
    assert!(rescued.is_empty(), "live jobs rescued after a clock jump: {rescued:#?}");
    shutdown.cancel();
    server.await.unwrap().unwrap();
    sim.running.stop().await;
    eprintln!(
        "{} jobs, max attempt {max_attempt}, max failed attempts of one job {max_extra}; {:?}",
        jobs.len(),
        started.elapsed()
    );
}
