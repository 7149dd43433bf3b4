//! Worker behaviour on SQLite with a manual clock: exactly-once in the happy path, retries
//! with backoff, rescue of a vanished worker's job with fencing, heartbeats, and concurrent
//! workers.

#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};
use sspr_domain::{Clock, JobId, ManualClock};
use sspr_queue::{
    Backoff, Enqueuer, Job, JobDone, JobError, JobFuture, JobHandler, JobState, NewJob, Worker,
    WorkerConfig,
};
use sspr_store::{Store, StoreOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const KIND: &str = "test.count";

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000, 0).unwrap()
}

async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
    let url = format!("sqlite://{}", dir.path().join("queue.db").display());
    let store = Store::connect(&url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store
}

fn new_job(kind: &str, at: DateTime<Utc>, max_attempts: i32) -> NewJob {
    NewJob {
        id: JobId::new(),
        kind: kind.into(),
        queue: "default".into(),
        payload: serde_json::json!({}),
        run_at: at,
        max_attempts,
        tenant_id: None,
        unique_key: None,
        created_at: at,
    }
}

type Counts = Arc<Mutex<HashMap<JobId, usize>>>;

/// Counts runs per job; fails with `fail` when set; waits for `gate` when set.
struct Counting {
    counts: Counts,
    fail: Option<JobError>,
    gate: Option<Arc<Notify>>,
}

impl Counting {
    fn new(counts: &Counts) -> Self {
        Self { counts: Arc::clone(counts), fail: None, gate: None }
    }
}

impl JobHandler for Counting {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn run<'a>(&'a self, job: &'a Job) -> JobFuture<'a> {
        Box::pin(async move {
            *self.counts.lock().unwrap().entry(job.id.clone()).or_default() += 1;
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            tokio::task::yield_now().await;
            match &self.fail {
                Some(e) => Err(e.clone()),
                None => Ok(JobDone::Finished),
            }
        })
    }
}

fn config(id: &str, lease: Duration) -> WorkerConfig {
    WorkerConfig {
        id: id.into(),
        lease,
        concurrency: 4,
        backoff: Backoff { base: Duration::from_secs(10), max: Duration::from_secs(60) },
        idle: Duration::from_millis(50),
        grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

fn worker(store: &Store, clock: &ManualClock, id: &str, handler: Counting) -> Worker {
    let handler: Arc<dyn JobHandler> = Arc::new(handler);
    Worker::new(
        store.clone(),
        Arc::new(clock.clone()),
        config(id, Duration::from_secs(30)),
        [handler],
    )
}

#[tokio::test]
async fn a_job_runs_exactly_once_and_is_completed() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let clock = ManualClock::new(start());
    let counts = Counts::default();
    let w = worker(&store, &clock, "w1", Counting::new(&counts));
    let job = store.enqueue_job(new_job(KIND, clock.now(), 3)).await.unwrap().0;

    assert_eq!(w.tick().await.unwrap(), 1);
    w.wait_idle().await;
    assert_eq!(w.tick().await.unwrap(), 0);
    clock.advance(TimeDelta::hours(1));
    assert_eq!(w.tick().await.unwrap(), 0);

    let done = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.attempt, 1);
    assert_eq!(done.claimed_by.as_deref(), Some("w1"));
    assert_eq!(done.finished_at, Some(start()));
    assert_eq!(counts.lock().unwrap().get(&job.id), Some(&1));
}

#[tokio::test]
async fn a_retryable_failure_is_retried_after_backoff_until_attempts_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let clock = ManualClock::new(start());
    let counts = Counts::default();
    let failing =
        Counting { fail: Some(JobError::retryable("throttled")), ..Counting::new(&counts) };
    let w = worker(&store, &clock, "w1", failing);
    let job = store.enqueue_job(new_job(KIND, clock.now(), 3)).await.unwrap().0;

    // Attempt n waits between half and all of 10 s * 2^(n-1).
    for (attempt, ceiling) in [(1, 10), (2, 20)] {
        assert_eq!(w.tick().await.unwrap(), 1);
        w.wait_idle().await;
        let queued = store.get_job(&job.id).await.unwrap().unwrap();
        assert_eq!(queued.state, JobState::Queued);
        assert_eq!(queued.attempt, attempt);
        assert_eq!(queued.last_error.as_deref(), Some("throttled"));
        let delay = queued.run_at - clock.now();
        assert!(
            delay >= TimeDelta::seconds(ceiling / 2) && delay <= TimeDelta::seconds(ceiling),
            "attempt {attempt}: {delay}"
        );
        // Not before the backoff is over.
        clock.advance(delay - TimeDelta::milliseconds(1));
        assert_eq!(w.tick().await.unwrap(), 0);
        clock.advance(TimeDelta::milliseconds(1));
    }
    assert_eq!(w.tick().await.unwrap(), 1);
    w.wait_idle().await;
    let failed = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.attempt, 3);
    assert_eq!(failed.last_error.as_deref(), Some("throttled"));
    assert_eq!(counts.lock().unwrap().get(&job.id), Some(&3));
    clock.advance(TimeDelta::hours(1));
    assert_eq!(w.tick().await.unwrap(), 0);
}

#[tokio::test]
async fn permanent_failures_and_unknown_kinds_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let clock = ManualClock::new(start());
    let counts = Counts::default();
    let failing =
        Counting { fail: Some(JobError::permanent("bad payload")), ..Counting::new(&counts) };
    let w = worker(&store, &clock, "w1", failing);
    let bad = store.enqueue_job(new_job(KIND, clock.now(), 5)).await.unwrap().0;
    let unknown = store.enqueue_job(new_job("test.nobody", clock.now(), 5)).await.unwrap().0;

    assert_eq!(w.tick().await.unwrap(), 2);
    w.wait_idle().await;
    let bad = store.get_job(&bad.id).await.unwrap().unwrap();
    assert_eq!((bad.state, bad.attempt), (JobState::Failed, 1));
    assert_eq!(bad.last_error.as_deref(), Some("bad payload"));
    let unknown = store.get_job(&unknown.id).await.unwrap().unwrap();
    assert_eq!((unknown.state, unknown.attempt), (JobState::Failed, 1));
    assert_eq!(unknown.last_error.as_deref(), Some("no handler for kind test.nobody"));
}

#[tokio::test]
async fn a_vanished_workers_job_is_reclaimed_after_its_lease_and_its_late_outcome_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let clock = ManualClock::new(start());
    let counts = Counts::default();
    let job = store.enqueue_job(new_job(KIND, clock.now(), 3)).await.unwrap().0;

    // A worker claims the job and vanishes: no heartbeat, no outcome.
    let lease = Duration::from_secs(30);
    let ghost = store.claim_jobs("default", "ghost", clock.now(), lease, 1).await.unwrap();
    assert_eq!(ghost.len(), 1);
    assert_eq!(ghost[0].attempt, 1);

    let w2 = worker(&store, &clock, "w2", Counting::new(&counts));
    clock.advance(TimeDelta::seconds(29));
    assert_eq!(w2.tick().await.unwrap(), 0, "the lease still holds");
    clock.advance(TimeDelta::seconds(1));
    assert_eq!(w2.tick().await.unwrap(), 1, "reaped and claimed again");
    w2.wait_idle().await;

    let done = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.attempt, 2);
    assert_eq!(done.claimed_by.as_deref(), Some("w2"));
    // The first worker comes back: its outcome is refused.
    assert!(!store.complete_job(&job.id, 1, clock.now()).await.unwrap());
    assert!(!store.fail_job(&job.id, 1, clock.now(), "late", None).await.unwrap());
    assert!(!store.heartbeat_job(&job.id, 1, clock.now(), lease).await.unwrap());
    assert_eq!(store.get_job(&job.id).await.unwrap().unwrap().state, JobState::Succeeded);
    assert_eq!(counts.lock().unwrap().get(&job.id), Some(&1));
}

#[tokio::test]
async fn heartbeats_keep_a_long_job_from_being_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let clock = ManualClock::new(start());
    let counts = Counts::default();
    let gate = Arc::new(Notify::new());
    let slow = Counting { gate: Some(Arc::clone(&gate)), ..Counting::new(&counts) };
    let lease = Duration::from_millis(300);
    let handler: Arc<dyn JobHandler> = Arc::new(slow);
    let w1 = Worker::new(store.clone(), Arc::new(clock.clone()), config("w1", lease), [handler]);
    let w2 = worker(&store, &clock, "w2", Counting::new(&counts));
    let job = store.enqueue_job(new_job(KIND, clock.now(), 3)).await.unwrap().0;

    assert_eq!(w1.tick().await.unwrap(), 1);
    for _ in 0..3 {
        // Past the lease taken at the last beat, but a beat (every 100 ms) renews it first.
        // The wait is ten beats long so that a loaded machine still fits one in.
        clock.advance(TimeDelta::milliseconds(250));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        clock.advance(TimeDelta::milliseconds(100));
        assert_eq!(w2.tick().await.unwrap(), 0);
        let running = store.get_job(&job.id).await.unwrap().unwrap();
        assert_eq!((running.state, running.attempt), (JobState::Running, 1));
        assert!(running.lease_expires_at.unwrap() > clock.now());
    }
    gate.notify_one();
    w1.wait_idle().await;
    let done = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!((done.state, done.attempt), (JobState::Succeeded, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_ticking_concurrently_run_each_of_200_jobs_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    // Each worker has its own connections, as two processes on one database would.
    let other = sqlite_store(&dir).await;
    let clock = ManualClock::new(start());
    let counts = Counts::default();
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(store.enqueue_job(new_job(KIND, clock.now(), 3)).await.unwrap().0.id);
    }
    let w1 = worker(&store, &clock, "w1", Counting::new(&counts));
    let w2 = worker(&other, &clock, "w2", Counting::new(&counts));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (a, b) = tokio::join!(w1.tick(), w2.tick());
        a.unwrap();
        b.unwrap();
        let states = store.count_jobs_by_state("default").await.unwrap();
        if states.get("succeeded") == Some(&200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "stuck at {states:?}");
        tokio::task::yield_now().await;
    }
    w1.wait_idle().await;
    w2.wait_idle().await;
    {
        let counts = counts.lock().unwrap();
        assert_eq!(counts.len(), 200);
        for id in &ids {
            assert_eq!(counts.get(id), Some(&1), "{id}");
        }
    }
    let mut by_worker = HashMap::new();
    for id in &ids {
        let job = store.get_job(id).await.unwrap().unwrap();
        assert_eq!(job.attempt, 1);
        *by_worker.entry(job.claimed_by.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(by_worker.values().sum::<i32>(), 200);
}

#[tokio::test]
async fn run_picks_up_an_enqueued_job_at_once_and_stops_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let clock = ManualClock::new(start());
    let counts = Counts::default();
    let enqueuer = Enqueuer::new(store.clone());
    let handler: Arc<dyn JobHandler> = Arc::new(Counting::new(&counts));
    // An idle interval far longer than the test: only the wake-up can start the job.
    let cfg =
        WorkerConfig { idle: Duration::from_secs(3600), ..config("w1", Duration::from_secs(30)) };
    let w = Worker::new(store.clone(), Arc::new(clock.clone()), cfg, [handler])
        .with_wake_signal(enqueuer.wake_signal());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(w.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;

    let job = enqueuer.enqueue(new_job(KIND, clock.now(), 3)).await.unwrap().0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = store.get_job(&job.id).await.unwrap().unwrap().state;
        if state == JobState::Succeeded {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {state}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running).await.unwrap().unwrap();
    assert_eq!(counts.lock().unwrap().get(&job.id), Some(&1));
}

/// Asks to run again `times` times, `every` apart, then finishes.
struct Snoozing {
    clock: ManualClock,
    runs: Arc<Mutex<usize>>,
    times: usize,
    every: TimeDelta,
}

impl JobHandler for Snoozing {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn run<'a>(&'a self, _job: &'a Job) -> JobFuture<'a> {
        Box::pin(async move {
            let mut runs = self.runs.lock().unwrap();
            *runs += 1;
            if *runs <= self.times {
                Ok(JobDone::RunAgainAt(self.clock.now() + self.every))
            } else {
                Ok(JobDone::Finished)
            }
        })
    }
}

#[tokio::test]
async fn a_job_that_asks_to_run_again_waits_without_spending_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let clock = ManualClock::new(start());
    let runs = Arc::new(Mutex::new(0));
    let handler: Arc<dyn JobHandler> = Arc::new(Snoozing {
        clock: clock.clone(),
        runs: Arc::clone(&runs),
        times: 5,
        every: TimeDelta::seconds(30),
    });
    let w = Worker::new(
        store.clone(),
        Arc::new(clock.clone()),
        config("w1", Duration::from_secs(30)),
        [handler],
    );
    // One attempt allowed, yet five "not yet" answers do not fail it.
    let job = store.enqueue_job(new_job(KIND, clock.now(), 1)).await.unwrap().0;
    for round in 1..=5 {
        assert_eq!(w.tick().await.unwrap(), 1, "round {round}");
        w.wait_idle().await;
        let queued = store.get_job(&job.id).await.unwrap().unwrap();
        assert_eq!(queued.state, JobState::Queued);
        assert_eq!(queued.run_at, clock.now() + TimeDelta::seconds(30));
        // Not before the time it asked for.
        clock.advance(TimeDelta::seconds(29));
        assert_eq!(w.tick().await.unwrap(), 0);
        clock.advance(TimeDelta::seconds(1));
    }
    assert_eq!(w.tick().await.unwrap(), 1);
    w.wait_idle().await;
    let done = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.attempt, 6);
    assert_eq!(*runs.lock().unwrap(), 6);
}
