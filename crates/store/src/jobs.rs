//! The durable job queue's table.
//!
//! A job is claimed by one worker under a lease (`lease_expires_at`) that the worker renews
//! by heartbeat. Claiming increments `attempt`; every later write by that worker names the
//! attempt it holds, so a worker that lost its lease (and whose job was rescued and claimed
//! again) cannot overwrite the outcome of the newer attempt. Delivery is at-least-once.
//! Times come from the caller's clock, never the database server's.

use std::{collections::BTreeMap, fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use sspr_domain::JobId;

use crate::{
    Backend, Store, StoreError,
    pool::{with_reader, with_writer},
    time::{from_ms, to_ms},
};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// Waiting for `run_at` and a free worker.
    Queued,
    /// Claimed by a worker whose lease has not been reaped.
    Running,
    /// Finished successfully (terminal).
    Succeeded,
    /// Finished unsuccessfully, attempts spent or error not retryable (terminal).
    Failed,
    /// Withdrawn before it finished (terminal).
    Cancelled,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The state as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job will never run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job state string was not one of [`JobState::as_str`]'s values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}")]
pub struct JobStateParseError(pub String);

impl FromStr for JobState {
    type Err = JobStateParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| JobStateParseError(s.to_owned()))
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Id of the job.
    pub id: JobId,
    /// What to run, e.g. `rollout.tenant_step`; selects the handler.
    pub kind: String,
    /// The queue workers claim from, e.g. `default`.
    pub queue: String,
    /// The handler's arguments.
    pub payload: serde_json::Value,
    /// Not claimed before this time.
    pub run_at: DateTime<Utc>,
    /// Attempts allowed before the job fails for good (at least 1).
    pub max_attempts: i32,
    /// The tenant the job works on, if any.
    pub tenant_id: Option<String>,
    /// When set, enqueueing while a job with the same key is queued or running returns that
    /// job instead of a new one.
    pub unique_key: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Id of the job.
    pub id: JobId,
    /// What to run.
    pub kind: String,
    /// The queue it is claimed from.
    pub queue: String,
    /// The handler's arguments.
    pub payload: serde_json::Value,
    /// Where the job is in its life.
    pub state: JobState,
    /// Not claimed before this time.
    pub run_at: DateTime<Utc>,
    /// Attempts started so far; while running, the number of the current attempt.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// While running, when the lease ends unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The worker that claimed the job last.
    pub claimed_by: Option<String>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When the job reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The tenant the job works on, if any.
    pub tenant_id: Option<String>,
    /// The idempotency key it was enqueued with, if any.
    pub unique_key: Option<String>,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    kind: String,
    queue: String,
    payload: String,
    state: String,
    run_at: i64,
    attempt: i32,
    max_attempts: i32,
    lease_expires_at: Option<i64>,
    claimed_by: Option<String>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    tenant_id: Option<String>,
    unique_key: Option<String>,
}

/// The columns [`JobRow`] reads, as a macro so queries can `concat!` it into `&'static str`.
macro_rules! job_columns {
    () => {
        "id, kind, queue, payload, state, run_at, attempt, max_attempts, lease_expires_at, \
         claimed_by, last_error, created_at, updated_at, finished_at, tenant_id, unique_key"
    };
}

/// The claim, one statement on both backends: pick the due queued jobs in (run_at, id) order
/// and mark them running under a new attempt and lease.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_expires_at = $1,
                 claimed_by = $2, updated_at = $3
             WHERE id IN (SELECT id FROM jobs
                          WHERE state = 'queued' AND queue = $4 AND run_at <= $3
                          ORDER BY run_at, id LIMIT $5",
            $lock,
            ") RETURNING ",
            job_columns!()
        )
    };
}

// The one place the dialects differ. On PostgreSQL concurrent claimers run in parallel, so the
// subquery locks the rows it picks and skips rows another claimer holds: without SKIP LOCKED
// two claimers would pick the same ids, and one would wait and then claim nothing. SQLite
// has no row locks and no FOR UPDATE; its single writer connection runs each statement alone,
// which makes the plain statement atomic.
const CLAIM_POSTGRES: &str = claim_sql!(" FOR UPDATE SKIP LOCKED");
const CLAIM_SQLITE: &str = claim_sql!("");

impl TryFrom<JobRow> for Job {
    type Error = StoreError;
    fn try_from(row: JobRow) -> Result<Self, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt { what: "job", detail };
        Ok(Job {
            id: row.id.parse().map_err(|e| corrupt(format!("id: {e}")))?,
            kind: row.kind,
            queue: row.queue,
            payload: serde_json::from_str(&row.payload)
                .map_err(|e| corrupt(format!("payload: {e}")))?,
            state: row.state.parse().map_err(|e| corrupt(format!("state: {e}")))?,
            run_at: from_ms(row.run_at, "job")?,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            lease_expires_at: row.lease_expires_at.map(|t| from_ms(t, "job")).transpose()?,
            claimed_by: row.claimed_by,
            last_error: row.last_error,
            created_at: from_ms(row.created_at, "job")?,
            updated_at: from_ms(row.updated_at, "job")?,
            finished_at: row.finished_at.map(|t| from_ms(t, "job")).transpose()?,
            tenant_id: row.tenant_id,
            unique_key: row.unique_key,
        })
    }
}

/// `now + lease` in Unix milliseconds, saturating.
fn lease_end(now: DateTime<Utc>, lease: Duration) -> i64 {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    to_ms(now).saturating_add(lease_ms)
}

impl Store {
    /// Enqueues a job. Returns the job and `true`, or, when `unique_key` is set and a job with
    /// that key is already queued or running, that job and `false`.
    pub async fn enqueue_job(&self, job: NewJob) -> Result<(Job, bool), StoreError> {
        const INSERT: &str = concat!(
            "INSERT INTO jobs (id, kind, queue, payload, state, run_at, attempt, max_attempts,
                 created_at, updated_at, tenant_id, unique_key)
             VALUES ($1, $2, $3, $4, 'queued', $5, 0, $6, $7, $7, $8, $9)
             ON CONFLICT (unique_key) WHERE state IN ('queued', 'running') DO NOTHING
             RETURNING ",
            job_columns!()
        );
        const EXISTING: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE unique_key = $1 AND state IN ('queued', 'running')"
        );
        let payload = serde_json::to_string(&job.payload)
            .map_err(|e| StoreError::Corrupt { what: "job", detail: format!("payload: {e}") })?;
        // The existing job may finish between the insert that clashed and the read: then the
        // key is free again and the insert is retried. Three rounds only fail if jobs with
        // this key finish as fast as they are enqueued.
        for _ in 0..3 {
            let inserted: Option<JobRow> = with_writer!(self, pool => {
                sqlx::query_as(INSERT)
                    .bind(job.id.as_str())
                    .bind(&job.kind)
                    .bind(&job.queue)
                    .bind(&payload)
                    .bind(to_ms(job.run_at))
                    .bind(job.max_attempts)
                    .bind(to_ms(job.created_at))
                    .bind(&job.tenant_id)
                    .bind(&job.unique_key)
                    .fetch_optional(pool)
                    .await
                    .map_err(StoreError::on_unique("job"))?
            });
            if let Some(row) = inserted {
                return Ok((row.try_into()?, true));
            }
            // Read on the writer: on SQLite a reader could lag behind the write just refused.
            let existing: Option<JobRow> = with_writer!(self, pool => {
                sqlx::query_as(EXISTING).bind(&job.unique_key).fetch_optional(pool).await?
            });
            if let Some(row) = existing {
                return Ok((row.try_into()?, false));
            }
        }
        Err(StoreError::Conflict { what: "job" })
    }

    /// Claims up to `limit` due jobs of `queue` for `worker`, in (run_at, id) order: each is
    /// marked running under a new attempt and a lease ending at `now + lease`. Concurrent
    /// claimers never receive the same job.
    pub async fn claim_jobs(
        &self,
        queue: &str,
        worker: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sql = match self.backend() {
            Backend::Sqlite => CLAIM_SQLITE,
            Backend::Postgres => CLAIM_POSTGRES,
        };
        let rows: Vec<JobRow> = with_writer!(self, pool => {
            sqlx::query_as(sql)
                .bind(lease_end(now, lease))
                .bind(worker)
                .bind(to_ms(now))
                .bind(queue)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        let mut jobs = rows.into_iter().map(Job::try_from).collect::<Result<Vec<_>, _>>()?;
        // RETURNING does not keep the subquery's order.
        jobs.sort_by(|a, b| (a.run_at, &a.id).cmp(&(b.run_at, &b.id)));
        Ok(jobs)
    }

    /// The plan the database chooses for [`Store::claim_jobs`], one line per plan node, for
    /// tests and diagnostics. On SQLite the `EXPLAIN QUERY PLAN` details; on PostgreSQL the
    /// `EXPLAIN` text.
    pub async fn explain_claim_jobs(&self) -> Result<Vec<String>, StoreError> {
        const SQLITE: &str = concat!("EXPLAIN QUERY PLAN ", claim_sql!(""));
        const POSTGRES: &str = concat!("EXPLAIN ", claim_sql!(" FOR UPDATE SKIP LOCKED"));
        let sql = match self.backend() {
            Backend::Sqlite => SQLITE,
            Backend::Postgres => POSTGRES,
        };
        let lines = with_writer!(self, pool => {
            let rows = sqlx::query(sql)
                .bind(0_i64)
                .bind("explain")
                .bind(0_i64)
                .bind("default")
                .bind(1_i64)
                .fetch_all(pool)
                .await?;
            let mut lines = Vec::with_capacity(rows.len());
            for row in &rows {
                // SQLite: (id, parent, notused, detail); PostgreSQL: one "QUERY PLAN" column.
                let column = usize::from(self.backend() == Backend::Sqlite) * 3;
                lines.push(sqlx::Row::try_get::<String, _>(row, column)?);
            }
            lines
        });
        Ok(lines)
    }

    /// Extends the lease of a running job to `now + lease`, if the job is still running under
    /// `attempt`. `false` means the lease was lost: the job was reaped, and perhaps claimed
    /// again, and the caller must stop treating it as its own.
    pub async fn heartbeat_job(
        &self,
        id: &JobId,
        attempt: i32,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let done = with_writer!(self, pool => {
            sqlx::query(
                "UPDATE jobs SET lease_expires_at = $1, updated_at = $2
                 WHERE id = $3 AND attempt = $4 AND state = 'running'",
            )
            .bind(lease_end(now, lease))
            .bind(to_ms(now))
            .bind(id.as_str())
            .bind(attempt)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Marks a running job succeeded, if it is still running under `attempt`. `false` means
    /// the attempt had lost its lease and its outcome is discarded.
    pub async fn complete_job(
        &self,
        id: &JobId,
        attempt: i32,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = with_writer!(self, pool => {
            sqlx::query(
                "UPDATE jobs SET state = 'succeeded', lease_expires_at = NULL, updated_at = $1,
                     finished_at = $1
                 WHERE id = $2 AND attempt = $3 AND state = 'running'",
            )
            .bind(to_ms(now))
            .bind(id.as_str())
            .bind(attempt)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Records a failed attempt of a running job, if it is still running under `attempt`.
    /// With `retry_at` and attempts left the job is queued again to run at `retry_at`;
    /// otherwise it fails for good. Either way `error` becomes its `last_error`. `false` means
    /// the attempt had lost its lease and its outcome is discarded.
    pub async fn fail_job(
        &self,
        id: &JobId,
        attempt: i32,
        now: DateTime<Utc>,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let done = with_writer!(self, pool => {
            sqlx::query(
                "UPDATE jobs SET
                     state = CASE WHEN $1 IS NOT NULL AND attempt < max_attempts
                                  THEN 'queued' ELSE 'failed' END,
                     run_at = CASE WHEN $1 IS NOT NULL AND attempt < max_attempts
                                   THEN $1 ELSE run_at END,
                     finished_at = CASE WHEN $1 IS NOT NULL AND attempt < max_attempts
                                        THEN NULL ELSE $2 END,
                     lease_expires_at = NULL, last_error = $3, updated_at = $2
                 WHERE id = $4 AND attempt = $5 AND state = 'running'",
            )
            .bind(retry_at.map(to_ms))
            .bind(to_ms(now))
            .bind(error)
            .bind(id.as_str())
            .bind(attempt)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Puts a running job back in the queue to run again at `run_at`, if it is still running
    /// under `attempt`: the handler found nothing to do yet (a gate not passed, a change not
    /// replicated). The attempt does not count against `max_attempts` (which grows by one, so
    /// attempt numbers stay increasing and keep fencing stale workers). `false` means the
    /// attempt had lost its lease.
    pub async fn snooze_job(
        &self,
        id: &JobId,
        attempt: i32,
        now: DateTime<Utc>,
        run_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = with_writer!(self, pool => {
            sqlx::query(
                "UPDATE jobs SET state = 'queued', run_at = $1, max_attempts = max_attempts + 1,
                     lease_expires_at = NULL, updated_at = $2
                 WHERE id = $3 AND attempt = $4 AND state = 'running'",
            )
            .bind(to_ms(run_at))
            .bind(to_ms(now))
            .bind(id.as_str())
            .bind(attempt)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Brings the queued job with `unique_key` forward to run at `now`, if it was due later.
    /// Returns whether a job moved.
    pub async fn wake_job(&self, unique_key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = with_writer!(self, pool => {
            sqlx::query(
                "UPDATE jobs SET run_at = $1, updated_at = $1
                 WHERE unique_key = $2 AND state = 'queued' AND run_at > $1",
            )
            .bind(to_ms(now))
            .bind(unique_key)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done > 0)
    }

    /// Rescues the running jobs of `queue` whose lease ended at or before `now` (their worker
    /// died or lost touch): queued again to run at once if attempts remain, failed otherwise,
    /// with `last_error` "lease expired" either way. Returns how many jobs were rescued.
    ///
    /// One queue only: a worker renews its own overtaken leases before it reaps (after a clock
    /// jump), which it can do for its queue, not for a worker of another queue.
    pub async fn reap_expired_jobs(
        &self,
        queue: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = with_writer!(self, pool => {
            sqlx::query(
                "UPDATE jobs SET
                     state = CASE WHEN attempt < max_attempts THEN 'queued' ELSE 'failed' END,
                     run_at = CASE WHEN attempt < max_attempts THEN $1 ELSE run_at END,
                     finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE $1 END,
                     lease_expires_at = NULL, last_error = 'lease expired', updated_at = $1
                 WHERE state = 'running' AND lease_expires_at <= $1 AND queue = $2",
            )
            .bind(to_ms(now))
            .bind(queue)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done)
    }

    /// One job by id.
    pub async fn get_job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        const SQL: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");
        let row: Option<JobRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(id.as_str()).fetch_optional(pool).await?
        });
        row.map(Job::try_from).transpose()
    }

    /// How many jobs of `queue` are in each state; states with no job are absent.
    pub async fn count_jobs_by_state(
        &self,
        queue: &str,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> = with_reader!(self, pool => {
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs WHERE queue = $1 GROUP BY state")
                .bind(queue)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|(state, n)| (state, u64::try_from(n).unwrap_or(0))).collect())
    }
}
