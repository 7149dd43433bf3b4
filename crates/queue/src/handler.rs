//! What a job kind runs.

use std::{future::Future, pin::Pin};

use chrono::{DateTime, Utc};
use sspr_store::Job;

/// The future a [`JobHandler`] returns.
pub type JobFuture<'a> = Pin<Box<dyn Future<Output = Result<JobDone, JobError>> + Send + 'a>>;

/// How an attempt that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobDone {
    /// The job is done for good.
    Finished,
    /// Nothing to do yet (a gate not passed, a change not visible yet): run the job again at
    /// this time. The attempt does not count against the job's attempts.
    RunAgainAt(DateTime<Utc>),
}

/// Runs the jobs of one kind. Delivery is at-least-once: `run` may be called again for a job
/// whose earlier attempt did its work but could not record it, so it must be idempotent.
pub trait JobHandler: Send + Sync + 'static {
    /// The job kind handled, e.g. `rollout.tenant_step`.
    fn kind(&self) -> &'static str;

    /// Runs one attempt of `job`.
    fn run<'a>(&'a self, job: &'a Job) -> JobFuture<'a>;
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    /// What went wrong, stored as the job's `last_error`; must not hold secrets.
    pub message: String,
    /// Whether another attempt may succeed (throttling, timeouts) as opposed to never
    /// (invalid payload, missing permission).
    pub retryable: bool,
}

impl JobError {
    /// A failure worth retrying after a backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }

    /// A failure no retry can fix; the job fails at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }
}
