//! The worker: claims due jobs, runs them under a renewed lease, records the outcome.

use std::{
    collections::HashMap,
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use sspr_domain::Clock;
use sspr_store::{Job, Store, StoreError};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{
    Backoff, JobDone, JobError, JobHandler,
    metrics::{Outcome, QueueMetrics},
};

/// How a [`Worker`] claims and runs jobs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names the worker in `claimed_by`; unique per process and worker.
    pub id: String,
    /// The queue to claim from.
    pub queue: String,
    /// How long a claim holds without a heartbeat. Heartbeats run every third of it, so a job
    /// survives two lost heartbeats; a dead worker's jobs run again after at most this long.
    pub lease: Duration,
    /// Most jobs run at once.
    pub concurrency: usize,
    /// Retry delays of retryable failures.
    pub backoff: Backoff,
    /// How long `run` waits between polls when no job was due (an in-process enqueue or a
    /// finished job ends the wait early).
    pub idle: Duration,
    /// How long `run` waits at shutdown for running jobs to finish. Jobs still running then
    /// are abandoned and run again elsewhere once their lease expires.
    pub grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: format!("worker-{}-{:08x}", std::process::id(), rand::random::<u32>()),
            queue: "default".into(),
            lease: Duration::from_secs(60),
            concurrency: 8,
            backoff: Backoff::default(),
            idle: Duration::from_secs(1),
            grace: Duration::from_secs(30),
        }
    }
}

/// What the job tasks share with the worker.
struct Shared {
    store: Store,
    clock: Arc<dyn Clock>,
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
    lease: Duration,
    backoff: Backoff,
    /// One permit per free slot; a running job holds one.
    slots: Arc<Semaphore>,
    /// Signalled when a job ends, so `run` claims again without waiting out its idle time.
    freed: Notify,
    /// Outcomes and latencies, for `/metrics`.
    metrics: Arc<QueueMetrics>,
    /// The jobs this worker runs, with their attempt and the lease expiry it last stored.
    running: std::sync::Mutex<HashMap<sspr_domain::JobId, (i32, DateTime<Utc>)>>,
}

impl Shared {
    fn lease_held(&self, job: &Job, until: DateTime<Utc>) {
        if let Ok(mut running) = self.running.lock() {
            running.insert(job.id.clone(), (job.attempt, until));
        }
    }

    fn finished(&self, job: &Job) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(&job.id);
        }
    }

    /// Renews the leases of this worker's running jobs that would look expired at `now`,
    /// before the reaper looks. Heartbeats keep them ahead of the clock, so this only writes
    /// when the clock jumped forward past them: without it the worker would rescue its own
    /// live jobs and run them twice at once.
    async fn renew_overtaken(&self, now: DateTime<Utc>) {
        let overtaken: Vec<(sspr_domain::JobId, i32)> = match self.running.lock() {
            Ok(running) => running
                .iter()
                .filter(|(_, (_, until))| *until <= now)
                .map(|(id, (attempt, _))| (id.clone(), *attempt))
                .collect(),
            Err(_) => return,
        };
        for (id, attempt) in overtaken {
            match self.store.heartbeat_job(&id, attempt, now, self.lease).await {
                Ok(true) => {
                    tracing::warn!(job = %id, "the clock jumped past a running job's lease; renewed");
                    if let Ok(mut running) = self.running.lock() {
                        running.insert(id, (attempt, later(now, self.lease)));
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(job = %id, error = %e, "job lease renewal failed"),
            }
        }
    }
}

/// A job worker. `tick` reaps expired leases and starts the due jobs that fit in its free
/// slots; `run` ticks until shutdown. Jobs run on their own tasks while a heartbeat renews
/// their lease.
#[derive(Clone)]
pub struct Worker {
    shared: Arc<Shared>,
    id: String,
    queue: String,
    concurrency: usize,
    idle: Duration,
    grace: Duration,
    wake: Arc<Notify>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<&str> = self.shared.handlers.keys().copied().collect();
        kinds.sort_unstable();
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .field("concurrency", &self.concurrency)
            .field("lease", &self.shared.lease)
            .field("kinds", &kinds)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker running `handlers` (one per kind; a later handler of the same kind replaces
    /// an earlier one).
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        config: WorkerConfig,
        handlers: impl IntoIterator<Item = Arc<dyn JobHandler>>,
    ) -> Self {
        let concurrency = config.concurrency.clamp(1, Semaphore::MAX_PERMITS);
        let handlers = handlers.into_iter().map(|h| (h.kind(), h)).collect();
        Self {
            shared: Arc::new(Shared {
                store,
                clock,
                handlers,
                lease: config.lease.max(Duration::from_millis(3)),
                backoff: config.backoff,
                slots: Arc::new(Semaphore::new(concurrency)),
                freed: Notify::new(),
                metrics: Arc::new(QueueMetrics::default()),
                running: std::sync::Mutex::new(HashMap::new()),
            }),
            id: config.id,
            queue: config.queue,
            concurrency,
            idle: config.idle,
            grace: config.grace,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes `run` whenever `wake` is notified, e.g. by an [`crate::Enqueuer`].
    pub fn with_wake_signal(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// The worker's counters (outcomes and latencies by job kind), for `/metrics`.
    pub fn metrics(&self) -> Arc<QueueMetrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// The worker's id, as recorded in `claimed_by`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many jobs this worker is running now.
    pub fn running(&self) -> usize {
        self.concurrency - self.shared.slots.available_permits()
    }

    /// One round: rescues jobs whose lease expired, then claims due jobs up to the free
    /// slots and starts them. Returns how many jobs were started (not finished).
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let store = &self.shared.store;
        let now = self.shared.clock.now();
        self.shared.renew_overtaken(now).await;
        let reaped = store.reap_expired_jobs(&self.queue, now).await?;
        if reaped > 0 {
            tracing::warn!(reaped, worker = %self.id, "rescued jobs whose lease expired");
        }
        let free = u32::try_from(self.shared.slots.available_permits()).unwrap_or(u32::MAX);
        if free == 0 {
            return Ok(0);
        }
        // Take every free slot before claiming, so a concurrent tick cannot claim jobs that
        // would then wait for a slot without a heartbeat; the unused ones go back at the end.
        let Ok(mut permits) = Arc::clone(&self.shared.slots).try_acquire_many_owned(free) else {
            return Ok(0);
        };
        let now = self.shared.clock.now();
        let jobs = store.claim_jobs(&self.queue, &self.id, now, self.shared.lease, free).await?;
        let started = jobs.len();
        for job in jobs {
            let Some(permit) = permits.split(1) else { break };
            self.shared.lease_held(&job, later(now, self.shared.lease));
            let shared = Arc::clone(&self.shared);
            tokio::spawn(run_job(shared, job, permit));
        }
        Ok(started)
    }

    /// Waits until no job of this worker is running.
    pub async fn wait_idle(&self) {
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        // The semaphore is never closed, so this only returns once every slot is free.
        if let Ok(permits) = self.shared.slots.acquire_many(all).await {
            drop(permits);
        }
    }

    /// Ticks until `shutdown` is cancelled, waiting the idle interval (or until woken) when no
    /// job was started. At shutdown it stops claiming and waits up to the grace period for the
    /// running jobs.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(worker = %self.id, queue = %self.queue, "job worker started");
        loop {
            let wait = tokio::select! {
                _ = shutdown.cancelled() => break,
                done = self.tick() => match done {
                    Ok(0) => self.idle,
                    Ok(_) => Duration::ZERO,
                    Err(e) => {
                        tracing::warn!(error = %e, worker = %self.id, "job queue round failed");
                        self.idle
                    }
                },
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = self.shared.freed.notified() => {}
            }
        }
        let started = Instant::now();
        if tokio::time::timeout(self.grace, self.wait_idle()).await.is_err() {
            tracing::warn!(
                worker = %self.id,
                running = self.running(),
                "shutdown grace period over; abandoned jobs run again once their lease expires"
            );
        } else {
            tracing::info!(worker = %self.id, waited = ?started.elapsed(), "job worker stopped");
        }
    }
}

/// `now + delay`, saturating at the far future.
fn later(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Runs one claimed job to its recorded outcome, renewing its lease meanwhile.
async fn run_job(shared: Arc<Shared>, job: Job, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let wait = (shared.clock.now() - job.run_at).to_std().unwrap_or_default();
    let outcome = match shared.handlers.get(job.kind.as_str()) {
        None => Err(JobError::permanent(format!("no handler for kind {}", job.kind))),
        Some(handler) => {
            let handler = Arc::clone(handler);
            let owned = job.clone();
            // Its own task, so that a panicking handler fails the attempt instead of leaving
            // the job running until its lease expires.
            let mut attempt = tokio::spawn(async move { handler.run(&owned).await });
            tokio::select! {
                joined = &mut attempt => joined.unwrap_or_else(|e| {
                    Err(JobError::retryable(if e.is_panic() {
                        "handler panicked".to_owned()
                    } else {
                        "handler was cancelled".to_owned()
                    }))
                }),
                () = heartbeat(&shared, &job) => {
                    // The lease is lost: another worker may already run the job, so stop.
                    attempt.abort();
                    shared.metrics.record(&job.kind, wait, started.elapsed(), Outcome::LeaseLost);
                    shared.finished(&job);
                    drop(permit);
                    shared.freed.notify_one();
                    return;
                }
            }
        }
    };
    let counted = match &outcome {
        Ok(JobDone::Finished) => Outcome::Succeeded,
        Ok(JobDone::RunAgainAt(_)) => Outcome::Snoozed,
        Err(e) if e.retryable && job.attempt < job.max_attempts => Outcome::Retried,
        Err(_) => Outcome::Failed,
    };
    shared.metrics.record(&job.kind, wait, started.elapsed(), counted);
    record(&shared, &job, outcome).await;
    shared.finished(&job);
    drop(permit);
    shared.freed.notify_one();
}

/// Renews the lease every third of its length; returns only once the lease is lost.
async fn heartbeat(shared: &Shared, job: &Job) {
    let every = shared.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let now = shared.clock.now();
        match shared.store.heartbeat_job(&job.id, job.attempt, now, shared.lease).await {
            Ok(true) => shared.lease_held(job, later(now, shared.lease)),
            Ok(false) => {
                tracing::warn!(job = %job.id, attempt = job.attempt, "job lease lost; abandoning");
                return;
            }
            // A failed renewal is retried at the next beat; the lease covers two misses.
            Err(e) => tracing::warn!(job = %job.id, error = %e, "job heartbeat failed"),
        }
    }
}

/// Records an attempt's outcome, fenced by its attempt number.
async fn record(shared: &Shared, job: &Job, outcome: Result<JobDone, JobError>) {
    let now = shared.clock.now();
    let recorded = match &outcome {
        Ok(JobDone::Finished) => shared.store.complete_job(&job.id, job.attempt, now).await,
        Ok(JobDone::RunAgainAt(at)) => {
            shared.store.snooze_job(&job.id, job.attempt, now, (*at).max(now)).await
        }
        Err(e) => {
            let retry_at = e.retryable.then(|| later(now, shared.backoff.delay(job.attempt)));
            shared.store.fail_job(&job.id, job.attempt, now, &e.message, retry_at).await
        }
    };
    match recorded {
        Ok(true) => match &outcome {
            Ok(JobDone::Finished) => {
                tracing::debug!(job = %job.id, kind = %job.kind, "job succeeded")
            }
            Ok(JobDone::RunAgainAt(at)) => {
                tracing::debug!(job = %job.id, kind = %job.kind, run_at = %at, "job runs again later")
            }
            Err(e) => tracing::info!(
                job = %job.id, kind = %job.kind, attempt = job.attempt,
                max_attempts = job.max_attempts, retryable = e.retryable, error = %e,
                "job attempt failed"
            ),
        },
        Ok(false) => tracing::warn!(
            job = %job.id, attempt = job.attempt,
            "job outcome discarded: the attempt had lost its lease"
        ),
        // The lease then expires and the job runs again: at-least-once.
        Err(e) => tracing::error!(job = %job.id, error = %e, "cannot record job outcome"),
    }
}
