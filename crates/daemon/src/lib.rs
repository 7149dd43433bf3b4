//! The `sspr-fleet` daemon: settings, telemetry, wiring of the store and the HTTP API, and
//! graceful shutdown. The binary in `main.rs` is only the command line on top of this.
//!
//! This crate wires the others together; no other crate depends on it except the end-to-end
//! tests, which start the daemon through [`Application`] exactly as `serve` does.

pub mod demo;
pub mod master_key;
pub mod settings;
pub mod telemetry;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use secrecy::ExposeSecret;
use sspr_api::{ApiSettings, AppState};
use sspr_domain::{Clock, SystemClock};
use sspr_store::Store;
use tokio_util::sync::CancellationToken;

use crate::{
    master_key::{KeySource, MasterKey},
    settings::Settings,
};

/// The vault for the master key in the settings, with every key kept beside it (a rotation in
/// progress, keys rotated out) so that each stored secret opens.
pub fn open_vault(
    settings: &Settings,
) -> anyhow::Result<(sspr_registry::Vault, MasterKey, KeySource)> {
    let (master_key, source) = MasterKey::resolve(
        settings.master_key.as_ref(),
        settings.master_key_file.as_deref(),
        &settings.data_dir,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let previous = match master_key::key_file(&source) {
        Some(file) => master_key::companions(file).map_err(|e| anyhow::anyhow!(e))?,
        None => Vec::new(),
    };
    let material = |k: &MasterKey| sspr_registry::MasterKeyMaterial {
        id: k.id().to_owned(),
        bytes: secrecy::SecretBox::new(Box::new(*k.expose())),
    };
    let previous: Vec<_> =
        previous.iter().filter(|k| k.id() != master_key.id()).map(material).collect();
    let vault = sspr_registry::Vault::new(&material(&master_key), &previous);
    Ok((vault, master_key, source))
}

/// The registry over `store`, with the vault and a Graph client built from the settings.
pub fn build_registry(
    settings: &Settings,
    store: &Store,
    vault: impl Into<Arc<sspr_registry::Vault>>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<sspr_registry::Registry> {
    let graph = sspr_graph::GraphClient::new(settings.graph_config())
        .context("cannot build the Graph client")?;
    let portal = sspr_graph::PortalClient::new(sspr_graph::PortalConfig::new(
        &settings.login_url,
        &settings.portal_url,
    ))
    .context("cannot build the portal client")?;
    Ok(sspr_registry::Registry::new(
        store.clone(),
        vault.into(),
        graph,
        clock,
        settings.registry_settings(),
    )
    .with_portal(portal))
}

/// Opens the database named in the settings and applies pending migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(settings.database_url.expose_secret(), &settings.store_options())
        .await
        .with_context(|| format!("cannot open the database {}", settings::mask_url(settings)))?;
    let report = store.migrate().await.context("cannot migrate the database")?;
    tracing::info!(
        backend = store.backend().name(),
        applied = report.applied_now,
        total = report.total,
        "database ready"
    );
    Ok(store)
}

/// A daemon that is bound to its port and ready to run.
pub struct Application {
    server: actix_web::dev::Server,
    addr: SocketAddr,
    store: Store,
    master_key: MasterKey,
    reverifier: Option<sspr_registry::Reverifier>,
    worker: Option<sspr_queue::Worker>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    report_scheduler: Option<sspr_reporting::readiness::Reports>,
    webhook_worker: Option<sspr_queue::Worker>,
}

impl Application {
    /// Opens the database, resolves the master key and binds the listener. Nothing is served
    /// until [`Application::run_until_stopped`].
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with a chosen clock (tests pass a manual one).
    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let store = open_store(settings).await?;
        let (vault, master_key, source) = open_vault(settings)?;
        match &source {
            KeySource::Generated(path) => tracing::warn!(
                key_id = master_key.id(),
                path = %path,
                "generated a new master key and stored it; back this file up, stored secrets cannot be read without it"
            ),
            KeySource::DataDir(path) => {
                tracing::info!(key_id = master_key.id(), path = %path, "master key loaded from the data directory")
            }
            KeySource::File(path) => {
                tracing::info!(key_id = master_key.id(), path = %path, "master key loaded from master_key_file")
            }
            KeySource::Setting => tracing::info!(
                key_id = master_key.id(),
                "master key loaded from the master_key setting"
            ),
        }
        let vault = Arc::new(vault);
        let webhooks = sspr_reporting::webhooks::Webhooks::new(
            store.clone(),
            vault.clone(),
            clock.clone(),
            settings.webhook_settings(),
        )
        .context("cannot set up webhooks")?;
        let registry = build_registry(settings, &store, vault, clock.clone())?;
        let reverifier = settings
            .registry
            .background_verify
            .then(|| sspr_registry::Reverifier::new(registry.clone(), 64, Duration::from_secs(30)));
        let enqueuer = sspr_queue::Enqueuer::new(store.clone());
        let engine = sspr_rollout::Engine::new(
            registry.clone(),
            enqueuer.clone(),
            clock.clone(),
            settings.engine_settings(),
        );
        let reports = sspr_reporting::readiness::Reports::new(
            registry.clone(),
            enqueuer.clone(),
            clock.clone(),
            settings.report_settings(),
        );
        let report_scheduler = settings.reporting.scheduled_refresh.then(|| reports.clone());
        let worker = settings.engine.run_jobs.then(|| {
            sspr_queue::Worker::new(
                store.clone(),
                clock.clone(),
                settings.worker_config(),
                engine.handlers().into_iter().chain(reports.handlers()),
            )
            .with_wake_signal(enqueuer.wake_signal())
        });
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Webhooks have their own queue and worker beside the engine's, with their own
        // retry delays; deliveries are queued by the store's outbox, in the transaction of
        // the event they report.
        let webhook_worker = settings.engine.run_jobs.then(|| {
            sspr_queue::Worker::new(
                store.clone(),
                clock.clone(),
                settings.webhook_worker_config(),
                webhooks.handlers(),
            )
        });
        let api_settings = ApiSettings {
            max_body_bytes: settings.api.max_body_bytes,
            max_import_bytes: settings.api.max_import_bytes,
            max_streams_per_key: settings.api.max_streams_per_key,
            max_streams: settings.api.max_streams,
        };
        let state = AppState {
            store: store.clone(),
            engine,
            queue_metrics: worker.as_ref().map(sspr_queue::Worker::metrics),
            stopping: Arc::clone(&stopping),
            reports,
            clock,
            settings: api_settings.clone(),
            streams: sspr_api::StreamSlots::for_settings(&api_settings),
            registry,
            webhooks,
            rollout_views: sspr_api::RolloutViews::default(),
            rate_limits: sspr_api::RateLimits::new(sspr_api::RateLimitSettings {
                per_second: settings.api.rate_per_second,
                burst: settings.api.rate_burst,
            }),
        };
        let mut server = actix_web::HttpServer::new(move || sspr_api::app(state.clone()))
            // Signals are ours to handle, so every component shuts down in one order.
            .disable_signals()
            .shutdown_timeout(settings.api.shutdown_timeout_secs)
            .client_request_timeout(Duration::from_secs(10));
        if settings.api.workers > 0 {
            server = server.workers(settings.api.workers);
        }
        let server = server
            .bind(settings.listen)
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = server.addrs().first().copied().context("the listener has no address")?;
        let server = server.run();
        Ok(Self {
            server,
            addr,
            store,
            master_key,
            reverifier,
            worker,
            webhook_worker,
            stopping,
            report_scheduler,
        })
    }

    /// The address the API listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The store the daemon uses.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The public id of the master key in use.
    pub fn master_key_id(&self) -> &str {
        self.master_key.id()
    }

    /// Serves until `shutdown` is cancelled: then stops accepting, lets in-flight requests
    /// finish (up to the shutdown timeout) and closes the database.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let stopping = Arc::clone(&self.stopping);
        let stopper = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                stopping.store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::info!("shutting down: no new connections, finishing requests in flight");
                handle.stop(true).await;
            }
        });
        let tasks = tokio_util::task::TaskTracker::new();
        if let Some(reverifier) = self.reverifier {
            tasks.spawn(reverifier.run(shutdown.clone()));
        }
        if let Some(reports) = self.report_scheduler {
            tasks.spawn(reports.run(shutdown.clone()));
        }
        if let Some(worker) = self.worker {
            tasks.spawn(worker.run(shutdown.clone()));
        }
        if let Some(worker) = self.webhook_worker {
            tasks.spawn(worker.run(shutdown.clone()));
        }
        tasks.spawn(purge_idempotency_keys(self.store.clone(), shutdown.clone()));
        tasks.close();
        tracing::info!(addr = %self.addr, "serving the API");
        let result = self.server.await.context("the HTTP server failed");
        shutdown.cancel();
        let _ = stopper.await;
        tasks.wait().await;
        self.store.close().await;
        tracing::info!("stopped");
        result
    }
}

/// Deletes expired `Idempotency-Key` records once an hour until `shutdown` (every replica may
/// run it; the deletes are idempotent).
async fn purge_idempotency_keys(store: Store, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match store.purge_idempotency_keys(SystemClock.now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired idempotency keys deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot delete expired idempotency keys"),
        }
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM. The handlers are installed before this
/// returns, so a signal that arrives right after start-up is not lost (nor does it kill the
/// process with the default action).
pub fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            }
            token.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    Ok(())
}
