//! Keeps readiness fresh: verifies new tenants promptly and every tenant again once its last
//! check is older than the re-verify interval.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Registry, RegistryError};

/// The background re-verifier. `tick` does one round; `run` loops until shutdown.
#[derive(Debug, Clone)]
pub struct Reverifier {
    registry: Registry,
    batch: u32,
    idle: Duration,
}

impl Reverifier {
    /// A re-verifier checking at most `batch` tenants per round and waiting `idle` when no
    /// tenant is due.
    pub fn new(registry: Registry, batch: u32, idle: Duration) -> Self {
        Self { registry, batch: batch.max(1), idle }
    }

    /// Verifies the tenants that are due; returns how many were checked.
    pub async fn tick(&self) -> Result<usize, RegistryError> {
        self.registry.verify_due(self.batch).await
    }

    /// Runs rounds until `shutdown` is cancelled. A round in progress is abandoned at shutdown;
    /// a check that did not record its result is simply due again at the next start.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let wait = tokio::select! {
                _ = shutdown.cancelled() => return,
                done = self.tick() => match done {
                    Ok(0) => self.idle,
                    Ok(_) => Duration::ZERO,
                    Err(e) => {
                        tracing::warn!(error = %e, "re-verification round failed");
                        self.idle
                    }
                },
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
