//! Adding jobs, and waking the workers of this process.

use std::sync::Arc;

use sspr_store::{Job, NewJob, Store, StoreError};
use tokio::sync::Notify;

/// Enqueues jobs and wakes the in-process workers sharing its [`Enqueuer::wake_signal`], so
/// that a job is picked up at once instead of after the workers' idle interval. Workers in
/// other processes find the job at their next poll.
#[derive(Debug, Clone)]
pub struct Enqueuer {
    store: Store,
    wake: Arc<Notify>,
}

impl Enqueuer {
    /// An enqueuer with its own wake-up signal.
    pub fn new(store: Store) -> Self {
        Self { store, wake: Arc::new(Notify::new()) }
    }

    /// The signal to give [`crate::Worker::with_wake_signal`].
    pub fn wake_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Stores `job` (see [`Store::enqueue_job`] for `unique_key`) and wakes a worker.
    pub async fn enqueue(&self, job: NewJob) -> Result<(Job, bool), StoreError> {
        let (job, created) = self.store.enqueue_job(job).await?;
        if created {
            self.wake.notify_one();
        }
        Ok((job, created))
    }
}
