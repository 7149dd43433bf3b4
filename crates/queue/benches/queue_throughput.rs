//! Jobs claimed and completed per second through the durable queue, on SQLite and PostgreSQL.
//!
//! For each backend three modes burn down the same number of pre-inserted, due, no-op jobs,
//! each on a fresh database (a temp file, or a fresh PostgreSQL schema):
//!
//! * `bare` (the baseline): `CONCURRENCY` tasks loop on the store's claim statement (the same
//!   text, `FOR UPDATE SKIP LOCKED` on PostgreSQL) and its completion statement, run directly
//!   with sqlx on pools configured like the store's (one WAL writer connection with
//!   `synchronous = NORMAL` on SQLite; `CONCURRENCY` connections on PostgreSQL);
//! * `store`: the same loop through `Store::claim_jobs` and `Store::complete_job`, which adds
//!   decoding every column into a `Job`, sorting, and the store's pool routing;
//! * `worker`: `CONCURRENCY` real `Worker`s of `BATCH` slots each with a no-op handler, which
//!   adds the reaper statement each tick, a task per job and the metrics.
//!
//! Printed: jobs/s per mode and its ratio to `bare` (target ≥ 0.5), and on PostgreSQL the
//! dead tuples left in `jobs`. Writes `bench/results/queue_throughput.json`. The disk's fsync
//! latency moves durable throughput by up to 10× between runs on this machine
//! (the team's perf-reliability reference, §0), which is why the baseline runs in the
//! same process, minutes apart at most.
//!
//! Run: `cargo bench -p sspr-queue --bench queue_throughput [-- JOBS BATCH CONCURRENCY
//! [sqlite|postgres|both]]` (defaults 5000 10 4 both). PostgreSQL comes from
//! `SSPR_FLEET_BENCH_DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`; when it is
//! unreachable the PostgreSQL half is skipped and says so.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used, clippy::expect_used)]

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use serde_json::{Value, json};
use sspr_domain::{JobId, SystemClock};
use sspr_queue::{Job, JobDone, JobFuture, JobHandler, Worker, WorkerConfig};
use sspr_store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

const QUEUE: &str = "bench";
const KIND: &str = "bench.noop";
const LEASE: Duration = Duration::from_secs(300);

/// The store's claim statement (`crates/store/src/jobs.rs`, `claim_sql!`), verbatim.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_expires_at = $1,
                 claimed_by = $2, updated_at = $3
             WHERE id IN (SELECT id FROM jobs
                          WHERE state = 'queued' AND queue = $4 AND run_at <= $3
                          ORDER BY run_at, id LIMIT $5",
            $lock,
            ") RETURNING id, kind, queue, payload, state, run_at, attempt, max_attempts, \
             lease_expires_at, claimed_by, last_error, created_at, updated_at, finished_at, \
             tenant_id, unique_key"
        )
    };
}
const CLAIM_SQLITE: &str = claim_sql!("");
const CLAIM_POSTGRES: &str = claim_sql!(" FOR UPDATE SKIP LOCKED");
/// The store's completion statement (`Store::complete_job`), verbatim.
const COMPLETE: &str =
    "UPDATE jobs SET state = 'succeeded', lease_expires_at = NULL, updated_at = $1,
                     finished_at = $1
                 WHERE id = $2 AND attempt = $3 AND state = 'running'";

/// Run parameters.
#[derive(Debug, Clone, Copy)]
struct Params {
    jobs: usize,
    batch: u32,
    concurrency: usize,
}

/// A fresh database: the store on it, and a raw sqlx pool configured like the store's.
struct Db {
    store: Store,
    raw: Raw,
    cleanup: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Clone)]
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

async fn sqlite_db() -> Db {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("queue.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url, &StoreOptions::default()).await.expect("sqlite store");
    store.migrate().await.expect("migrations");
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .expect("sqlite url")
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    // One writer connection, as the store uses: SQLite runs one write at a time anyway.
    let raw = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("raw sqlite pool");
    Db { store, raw: Raw::Sqlite(raw), cleanup: None, _dir: Some(dir) }
}

async fn postgres_db(admin_url: &str, p: Params) -> Option<Db> {
    let admin = match sqlx::PgPool::connect(admin_url).await {
        Ok(admin) => admin,
        Err(e) => {
            eprintln!("PostgreSQL skipped: cannot reach {admin_url}: {e}");
            return None;
        }
    };
    let schema = format!("bench_{}", uuid_like());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("create schema");
    admin.close().await;
    let sep = if admin_url.contains('?') { '&' } else { '?' };
    let url = format!("{admin_url}{sep}options=-c%20search_path%3D{schema}");
    let pool_size = u32::try_from(p.concurrency).unwrap_or(u32::MAX).max(2);
    let store =
        Store::connect(&url, &StoreOptions { max_connections: pool_size, ..Default::default() })
            .await
            .expect("postgres store");
    store.migrate().await.expect("migrations");
    let raw = sqlx::postgres::PgPoolOptions::new()
        .max_connections(pool_size)
        .connect(&url)
        .await
        .expect("raw postgres pool");
    Some(Db {
        store,
        raw: Raw::Postgres(raw),
        cleanup: Some((admin_url.to_owned(), schema)),
        _dir: None,
    })
}

fn uuid_like() -> String {
    JobId::new().as_str().trim_start_matches(JobId::PREFIX).to_owned()
}

impl Db {
    /// Inserts `n` due jobs in one transaction (not measured).
    async fn fill(&self, n: usize) {
        const INSERT: &str = "INSERT INTO jobs (id, kind, queue, payload, state, run_at, attempt,
                 max_attempts, created_at, updated_at) VALUES ($1, $2, $3, '{}', 'queued', $4, 0,
                 3, $4, $4)";
        let t = now_ms() - 1000;
        match &self.raw {
            Raw::Sqlite(pool) => {
                let mut tx = pool.begin().await.expect("begin");
                for _ in 0..n {
                    sqlx::query(INSERT)
                        .bind(JobId::new().as_str())
                        .bind(KIND)
                        .bind(QUEUE)
                        .bind(t)
                        .execute(&mut *tx)
                        .await
                        .expect("insert");
                }
                tx.commit().await.expect("commit");
            }
            Raw::Postgres(pool) => {
                let mut tx = pool.begin().await.expect("begin");
                for _ in 0..n {
                    sqlx::query(INSERT)
                        .bind(JobId::new().as_str())
                        .bind(KIND)
                        .bind(QUEUE)
                        .bind(t)
                        .execute(&mut *tx)
                        .await
                        .expect("insert");
                }
                tx.commit().await.expect("commit");
                sqlx::query("VACUUM ANALYZE jobs").execute(pool).await.expect("vacuum");
            }
        }
    }

    async fn succeeded(&self) -> i64 {
        let sql = "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'";
        match &self.raw {
            Raw::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.expect("count"),
            Raw::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.expect("count"),
        }
    }

    /// Dead tuples of `jobs` on PostgreSQL (statistics lag by up to a moment).
    async fn dead_tuples(&self) -> Option<i64> {
        let Raw::Postgres(pool) = &self.raw else { return None };
        sqlx::query_scalar(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'jobs'
             AND schemaname = current_schema()",
        )
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
    }

    async fn close(self) {
        self.store.close().await;
        match self.raw {
            Raw::Sqlite(p) => p.close().await,
            Raw::Postgres(p) => p.close().await,
        }
        if let Some((admin_url, schema)) = self.cleanup {
            let admin = sqlx::PgPool::connect(&admin_url).await.expect("admin");
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&admin)
                .await
                .expect("drop schema");
            admin.close().await;
        }
    }
}

/// The baseline: claim and complete with the store's statements, straight through sqlx.
async fn bare_loop(raw: Raw, worker: String, batch: u32) -> usize {
    let mut done = 0;
    loop {
        let now = now_ms();
        let lease_end = now + 300_000;
        let claimed: Vec<(String, i32)> = match &raw {
            Raw::Sqlite(pool) => {
                let rows = sqlx::query(CLAIM_SQLITE)
                    .bind(lease_end)
                    .bind(&worker)
                    .bind(now)
                    .bind(QUEUE)
                    .bind(i64::from(batch))
                    .fetch_all(pool)
                    .await
                    .expect("claim");
                rows.iter()
                    .map(|r| (sqlx::Row::get(r, "id"), sqlx::Row::get(r, "attempt")))
                    .collect()
            }
            Raw::Postgres(pool) => {
                let rows = sqlx::query(CLAIM_POSTGRES)
                    .bind(lease_end)
                    .bind(&worker)
                    .bind(now)
                    .bind(QUEUE)
                    .bind(i64::from(batch))
                    .fetch_all(pool)
                    .await
                    .expect("claim");
                rows.iter()
                    .map(|r| (sqlx::Row::get(r, "id"), sqlx::Row::get(r, "attempt")))
                    .collect()
            }
        };
        if claimed.is_empty() {
            return done;
        }
        for (id, attempt) in claimed {
            let now = now_ms();
            let n = match &raw {
                Raw::Sqlite(pool) => sqlx::query(COMPLETE)
                    .bind(now)
                    .bind(&id)
                    .bind(attempt)
                    .execute(pool)
                    .await
                    .expect("complete")
                    .rows_affected(),
                Raw::Postgres(pool) => sqlx::query(COMPLETE)
                    .bind(now)
                    .bind(&id)
                    .bind(attempt)
                    .execute(pool)
                    .await
                    .expect("complete")
                    .rows_affected(),
            };
            assert_eq!(n, 1, "completion of {id} matched no running attempt");
            done += 1;
        }
    }
}

/// The store's path: `claim_jobs` then `complete_job` for each claimed job.
async fn store_loop(store: Store, worker: String, batch: u32) -> usize {
    let mut done = 0;
    loop {
        let jobs = store.claim_jobs(QUEUE, &worker, Utc::now(), LEASE, batch).await.expect("claim");
        if jobs.is_empty() {
            return done;
        }
        for job in jobs {
            let ok = store.complete_job(&job.id, job.attempt, Utc::now()).await.expect("complete");
            assert!(ok, "completion of {} matched no running attempt", job.id);
            done += 1;
        }
    }
}

/// A handler that does nothing and counts.
#[derive(Debug)]
struct Noop(Arc<AtomicUsize>);

impl JobHandler for Noop {
    fn kind(&self) -> &'static str {
        KIND
    }
    fn run<'a>(&'a self, _job: &'a Job) -> JobFuture<'a> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(JobDone::Finished) })
    }
}

/// Runs one mode on a fresh, filled database; returns its figures.
async fn run_mode(backend: &str, mode: &str, p: Params, pg_url: &str) -> Option<Value> {
    let db = match backend {
        "sqlite" => sqlite_db().await,
        _ => postgres_db(pg_url, p).await?,
    };
    db.fill(p.jobs).await;
    let started = Instant::now();
    let done = match mode {
        "bare" => {
            let tasks: Vec<_> = (0..p.concurrency)
                .map(|i| tokio::spawn(bare_loop(db.raw.clone(), format!("bare-{i}"), p.batch)))
                .collect();
            let mut n = 0;
            for t in tasks {
                n += t.await.expect("bare task");
            }
            n
        }
        "store" => {
            let tasks: Vec<_> = (0..p.concurrency)
                .map(|i| tokio::spawn(store_loop(db.store.clone(), format!("store-{i}"), p.batch)))
                .collect();
            let mut n = 0;
            for t in tasks {
                n += t.await.expect("store task");
            }
            n
        }
        _ => {
            let ran = Arc::new(AtomicUsize::new(0));
            let shutdown = CancellationToken::new();
            let workers: Vec<_> = (0..p.concurrency)
                .map(|i| {
                    let worker = Worker::new(
                        db.store.clone(),
                        Arc::new(SystemClock),
                        WorkerConfig {
                            id: format!("worker-{i}"),
                            queue: QUEUE.into(),
                            lease: LEASE,
                            concurrency: p.batch as usize,
                            idle: Duration::from_millis(5),
                            grace: Duration::from_secs(10),
                            ..Default::default()
                        },
                        [Arc::new(Noop(Arc::clone(&ran))) as Arc<dyn JobHandler>],
                    );
                    tokio::spawn(worker.run(shutdown.clone()))
                })
                .collect();
            // The handler's count says when every job ran; the database says when each outcome
            // was recorded.
            while ran.load(Ordering::Relaxed) < p.jobs {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            while usize::try_from(db.succeeded().await).unwrap_or(0) < p.jobs {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            shutdown.cancel();
            for w in workers {
                w.await.expect("worker task");
            }
            ran.load(Ordering::Relaxed)
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let succeeded = db.succeeded().await;
    assert_eq!(done, p.jobs, "{backend}/{mode}: ran {done} of {} jobs", p.jobs);
    assert_eq!(usize::try_from(succeeded).unwrap_or(0), p.jobs, "{backend}/{mode}: succeeded");
    let dead = db.dead_tuples().await;
    db.close().await;
    Some(json!({
        "backend": backend,
        "mode": mode,
        "jobs": done,
        "seconds": secs,
        "jobs_per_sec": done as f64 / secs,
        "dead_tuples": dead,
    }))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let p = Params {
        jobs: nums.first().copied().unwrap_or(5000),
        batch: u32::try_from(nums.get(1).copied().unwrap_or(10)).unwrap_or(10).max(1),
        concurrency: nums.get(2).copied().unwrap_or(4).max(1),
    };
    let which = args
        .iter()
        .find(|a| matches!(a.as_str(), "sqlite" | "postgres" | "both"))
        .cloned()
        .unwrap_or_else(|| "both".into());
    let backends: Vec<&str> = match which.as_str() {
        "sqlite" => vec!["sqlite"],
        "postgres" => vec!["postgres"],
        _ => vec!["sqlite", "postgres"],
    };
    let pg_url = std::env::var("SSPR_FLEET_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "queue throughput: {} jobs, batch {}, concurrency {} (2 cores)",
        p.jobs, p.batch, p.concurrency
    );
    let mut results = Vec::new();
    let mut summary = Vec::new();
    rt.block_on(async {
        for backend in backends {
            let mut base = None;
            for mode in ["bare", "store", "worker"] {
                let Some(r) = run_mode(backend, mode, p, &pg_url).await else { break };
                let rate = r["jobs_per_sec"].as_f64().unwrap_or(0.0);
                let base_rate = *base.get_or_insert(rate);
                let ratio = rate / base_rate;
                println!(
                    "{backend:<9} {mode:<7} {:>9.0} jobs/s  {:>6.2} s  {:>5.2}x bare{}",
                    rate,
                    r["seconds"].as_f64().unwrap_or(0.0),
                    ratio,
                    r["dead_tuples"]
                        .as_i64()
                        .map(|d| format!("  dead tuples {d}"))
                        .unwrap_or_default()
                );
                let mut r = r;
                r["ratio_to_bare"] = json!(ratio);
                if mode != "bare" {
                    summary.push(json!({
                        "backend": backend, "mode": mode, "ratio_to_bare": ratio,
                        "meets_target": ratio >= 0.5,
                    }));
                }
                results.push(r);
            }
        }
    });
    let out = json!({
        "bench": "queue_throughput",
        "jobs": p.jobs,
        "batch": p.batch,
        "concurrency": p.concurrency,
        "target_ratio_to_bare": 0.5,
        "baseline": "bare: the store's claim and completion statements run directly with sqlx, \
                     same pools, same run",
        "results": results,
        "summary": summary,
    });
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/results/queue_throughput.json");
    std::fs::write(path, serde_json::to_string_pretty(&out).expect("json") + "\n")
        .expect("write results");
    println!("wrote bench/results/queue_throughput.json");
}
