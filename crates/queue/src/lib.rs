//! The durable job queue of sspr-fleet: jobs stored by `sspr-store` (on SQLite or
//! PostgreSQL) and the workers that claim, run, retry and rescue them.
//!
//! Delivery is at-least-once: a job whose worker dies is run again once its lease expires, so
//! every handler must be idempotent (read before write, deterministic names). A worker renews
//! its lease by heartbeat while a job runs, and every completion names the attempt it ends,
//! so a worker that lost its lease cannot overwrite a newer attempt's outcome.
//!
//! This crate must not depend on actix-web or on Graph: handlers that call Graph live in the
//! crates that own those calls and are registered with a [`Worker`].

mod backoff;
mod enqueue;
mod handler;
pub mod metrics;
mod worker;

pub use backoff::Backoff;
pub use enqueue::Enqueuer;
pub use handler::{JobDone, JobError, JobFuture, JobHandler};
pub use metrics::QueueMetrics;
pub use sspr_store::{Job, JobState, NewJob};
pub use worker::{Worker, WorkerConfig};
