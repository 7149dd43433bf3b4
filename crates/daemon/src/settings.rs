//! Settings: the embedded defaults, then an optional TOML file, then `SSPR_FLEET_*` variables.
//! Everything is checked here, before anything starts, and a bad value stops start-up with one
//! line naming the setting.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The commented defaults, embedded in the binary. Also the configuration reference.
pub const DEFAULT_CONFIG: &str = include_str!("../config.default.toml");

/// The prefix of every environment variable the daemon reads.
pub const ENV_PREFIX: &str = "SSPR_FLEET_";

/// The top-level keys; environment variables outside them are ignored (with a warning), so
/// that unrelated `SSPR_FLEET_TEST_*` variables do not stop the daemon.
const TOP_LEVEL_KEYS: &[&str] = &[
    "database_url",
    "listen",
    "data_dir",
    "master_key",
    "master_key_file",
    "graph_url",
    "login_url",
    "portal_url",
    "log",
    "log_format",
    "api",
    "database",
    "graph",
    "registry",
    "engine",
    "reporting",
    "webhooks",
];

/// All settings of the daemon.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `sqlite://...` or `postgres://...`. May hold a password, so it is secret.
    #[serde(serialize_with = "serialize_masked")]
    pub database_url: SecretString,
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Directory for the generated master key.
    pub data_dir: PathBuf,
    /// The master key, base64 of 32 bytes.
    #[serde(default, skip_serializing)]
    pub master_key: Option<SecretString>,
    /// A file holding the master key.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// Base URL of Microsoft Graph.
    pub graph_url: String,
    /// Base URL of the Microsoft identity platform.
    pub login_url: String,
    /// Base URL of the Azure portal's API, used only by the unsupported `portal` scope mode.
    pub portal_url: String,
    /// Log filter.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
    /// HTTP settings.
    pub api: ApiSection,
    /// Database pool settings.
    pub database: DatabaseSection,
    /// Graph client settings.
    pub graph: GraphSection,
    /// Tenant registry settings.
    pub registry: RegistrySection,
    /// Rollout engine and job queue settings.
    pub engine: EngineSection,
    /// SSPR readiness report settings.
    pub reporting: ReportingSection,
    /// Webhook delivery settings.
    pub webhooks: WebhooksSection,
}

/// `[reporting]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReportingSection {
    /// Refresh a tenant's readiness report when it is older than this, in hours.
    pub refresh_hours: u64,
    /// Whether `serve` refreshes reports on schedule (off: only on demand).
    pub scheduled_refresh: bool,
    /// How often the scheduler looks for reports to refresh, in seconds.
    pub check_every_secs: u64,
}

/// `[webhooks]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSection {
    /// Attempts of one delivery before it is marked failed.
    pub max_attempts: i32,
    /// How long one attempt may take, in seconds.
    pub timeout_secs: u64,
    /// First retry delay of a failed delivery, in milliseconds (doubles per attempt, with
    /// jitter).
    pub retry_base_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// Deliveries sent at once by this process.
    pub workers: usize,
    /// How often the webhook queue is polled when idle, in milliseconds.
    pub idle_poll_ms: u64,
    /// Whether webhook URLs may point at loopback, private, link-local and other non-public
    /// addresses (an internal PSA). Off: refused when set and when a delivery connects.
    pub allow_private_targets: bool,
}

/// `[engine]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Whether this process runs rollout jobs (an API-only replica sets false).
    pub run_jobs: bool,
    /// Jobs run at once by this process.
    pub workers: usize,
    /// How long a claimed job is held without a heartbeat, in seconds.
    pub lease_secs: u64,
    /// How often the queue is polled when idle, in milliseconds.
    pub idle_poll_ms: u64,
    /// The first delay before a waiting tenant (verification, gates) is checked again, in
    /// milliseconds; later checks of the same wait back off (doubling, with jitter).
    pub wait_poll_ms: u64,
    /// The longest delay between two checks of a waiting tenant, in milliseconds.
    pub wait_poll_max_ms: u64,
    /// How the pilot users' registration details are read: `auto`, `listing`, `per_user`.
    pub pilot_details: String,
    /// The page size `pilot_details = "auto"` assumes for `userRegistrationDetails`.
    pub report_page_size: usize,
    /// How often a running rollout's scheduler runs, in milliseconds.
    pub advance_ms: u64,
    /// Attempts of a step before the tenant fails.
    pub step_attempts: i32,
    /// First retry delay of a failed step, in milliseconds (doubles per attempt, with jitter).
    pub retry_base_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub retry_max_ms: u64,
}

/// `[registry]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// Most tenants verified at once.
    pub verify_concurrency: usize,
    /// Re-verify tenants whose last check is older than this, in hours.
    pub reverify_after_hours: u64,
    /// Verify tenants in the background.
    pub background_verify: bool,
}

/// `[graph]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSection {
    /// Token scope.
    pub scope: String,
    /// Global concurrency cap.
    pub max_concurrency: usize,
    /// Per-tenant concurrency cap.
    pub per_tenant_concurrency: usize,
    /// Share of the documented per-tenant limits to use.
    pub rate_share: f64,
    /// Share of the documented app-wide limits this process uses.
    pub app_share: f64,
    /// Share of the reporting APIs' app-wide limit (122 report reads per 10 s per app) this
    /// process uses.
    pub report_share: f64,
    /// How members are added to groups.
    pub member_add: sspr_graph::MemberAdd,
    /// Request timeout, in seconds.
    pub request_timeout_secs: u64,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest import file, in bytes.
    pub max_import_bytes: usize,
    /// Most event streams one API key may have open per process.
    pub max_streams_per_key: usize,
    /// Most event streams open per process.
    pub max_streams: usize,
    /// Sustained requests per second per API key (and per client address without a valid
    /// key); 0 switches rate limiting off.
    pub rate_per_second: u32,
    /// Requests a key (or address) may send at once above the sustained rate.
    pub rate_burst: u32,
    /// HTTP worker threads; 0 for one per core.
    pub workers: usize,
    /// Grace period for in-flight requests on shutdown.
    pub shutdown_timeout_secs: u64,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// PostgreSQL pool size.
    pub max_connections: u32,
    /// SQLite read connections.
    pub sqlite_readers: u32,
    /// Wait for a connection or lock, in seconds.
    pub acquire_timeout_secs: u64,
}

/// A setting that is missing, malformed or out of range.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key} ({env}): {message}")]
pub struct SettingsError {
    /// The key as written in the TOML file, e.g. `api.max_body_bytes`.
    pub key: String,
    /// The environment variable that sets it.
    pub env: String,
    /// What is wrong, never including a secret value.
    pub message: String,
}

impl SettingsError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self { key: key.to_owned(), env: env_name(key), message: message.into() }
    }
}

/// The environment variable for a key: `api.max_body_bytes` -> `SSPR_FLEET_API__MAX_BODY_BYTES`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_ascii_uppercase())
}

const SECRET_KEYS: &[&str] = &["master_key", "database_url"];

impl Settings {
    /// Loads settings from the defaults, the optional file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, std::env::vars())
    }

    /// Loads settings with the given environment (tests pass their own).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_CONFIG));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(SettingsError {
                    key: "--config".into(),
                    env: "command line".into(),
                    message: format!("no such file: {}", path.display()),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let env: Vec<(String, String)> =
            env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        let known = |name: &str| {
            let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
            let top = key.split("__").next().unwrap_or_default().to_owned();
            TOP_LEVEL_KEYS.contains(&top.as_str())
        };
        for (name, _) in env.iter().filter(|(k, _)| !known(k)) {
            if !name.starts_with("SSPR_FLEET_TEST_") {
                eprintln!("warning: ignoring unknown environment variable {name}");
            }
        }
        for (name, value) in env.into_iter().filter(|(k, _)| known(k)) {
            // SSPR_FLEET_API__MAX_BODY_BYTES -> api.max_body_bytes; values are read the way
            // figment reads environment values (numbers, booleans, else strings).
            let key = name[ENV_PREFIX.len()..].to_ascii_lowercase().replace("__", ".");
            let value: figment::value::Value =
                value.parse().unwrap_or_else(|e: std::convert::Infallible| match e {});
            figment = figment.merge(Serialized::default(&key, value));
        }
        let settings: Settings = figment.extract().map_err(|err| {
            let key = err.path.join(".");
            let key = if key.is_empty() { "(file)".to_owned() } else { key };
            let message = match &err.kind {
                figment::error::Kind::UnknownField(field, _) => format!("unknown key {field:?}"),
                kind => {
                    let text = kind.to_string();
                    // Never echo a secret value back in an error.
                    if SECRET_KEYS.iter().any(|s| key == *s) {
                        "not a valid value".to_owned()
                    } else {
                        text
                    }
                }
            };
            SettingsError::new(&key, message)
        })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        use secrecy::ExposeSecret;
        let url = self.database_url.expose_secret();
        if sspr_store::Backend::from_url(url).is_err() {
            return Err(SettingsError::new(
                "database_url",
                "expected sqlite://FILE or postgres://USER@HOST:PORT/DB",
            ));
        }
        for (key, value) in [
            ("graph_url", &self.graph_url),
            ("login_url", &self.login_url),
            ("portal_url", &self.portal_url),
        ] {
            let ok = (value.starts_with("https://") || value.starts_with("http://"))
                && value.len() > "https://".len()
                && !value.contains(char::is_whitespace);
            if !ok {
                return Err(SettingsError::new(
                    key,
                    format!("expected an http(s) URL, got {value:?}"),
                ));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log).is_err() {
            return Err(SettingsError::new(
                "log",
                format!("not a valid log filter: {:?}", self.log),
            ));
        }
        if self.master_key.is_some() && self.master_key_file.is_some() {
            return Err(SettingsError::new(
                "master_key",
                "set either master_key or master_key_file, not both",
            ));
        }
        if let Some(key) = &self.master_key {
            crate::master_key::MasterKey::decode(key.expose_secret())
                .map_err(|e| SettingsError::new("master_key", e))?;
        }
        if self.api.rate_per_second > 0 && self.api.rate_burst == 0 {
            return Err(SettingsError::new(
                "api.rate_burst",
                "must be at least 1 when api.rate_per_second is set",
            ));
        }
        if self.api.max_streams_per_key == 0 {
            return Err(SettingsError::new("api.max_streams_per_key", "must be at least 1"));
        }
        if self.api.max_streams == 0 {
            return Err(SettingsError::new("api.max_streams", "must be at least 1"));
        }
        if self.api.max_body_bytes < 1024 {
            return Err(SettingsError::new("api.max_body_bytes", "must be at least 1024"));
        }
        if !(self.graph.rate_share > 0.0 && self.graph.rate_share <= 1.0) {
            return Err(SettingsError::new(
                "graph.rate_share",
                "must be more than 0 and at most 1",
            ));
        }
        if !(self.graph.app_share > 0.0 && self.graph.app_share <= 1.0) {
            return Err(SettingsError::new("graph.app_share", "must be more than 0 and at most 1"));
        }
        if !(self.graph.report_share > 0.0 && self.graph.report_share <= 1.0) {
            return Err(SettingsError::new(
                "graph.report_share",
                "must be more than 0 and at most 1",
            ));
        }
        if self.graph.max_concurrency == 0 || self.graph.per_tenant_concurrency == 0 {
            return Err(SettingsError::new(
                "graph.max_concurrency",
                "concurrency limits must be at least 1",
            ));
        }
        if !self.graph.scope.ends_with("/.default") {
            return Err(SettingsError::new("graph.scope", "expected <graph resource>/.default"));
        }
        if self.registry.verify_concurrency == 0 {
            return Err(SettingsError::new("registry.verify_concurrency", "must be at least 1"));
        }
        if self.registry.reverify_after_hours == 0 {
            return Err(SettingsError::new("registry.reverify_after_hours", "must be at least 1"));
        }
        if self.reporting.refresh_hours == 0 {
            return Err(SettingsError::new("reporting.refresh_hours", "must be at least 1"));
        }
        if self.reporting.check_every_secs == 0 {
            return Err(SettingsError::new("reporting.check_every_secs", "must be at least 1"));
        }
        if self.api.max_import_bytes < self.api.max_body_bytes {
            return Err(SettingsError::new(
                "api.max_import_bytes",
                "must be at least api.max_body_bytes",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(SettingsError::new("database.max_connections", "must be at least 1"));
        }
        let e = &self.engine;
        if e.workers == 0 {
            return Err(SettingsError::new("engine.workers", "must be at least 1"));
        }
        if e.lease_secs < 3 {
            return Err(SettingsError::new("engine.lease_secs", "must be at least 3"));
        }
        if e.idle_poll_ms == 0 || e.wait_poll_ms == 0 || e.advance_ms == 0 {
            return Err(SettingsError::new(
                "engine.wait_poll_ms",
                "poll intervals must be at least 1 ms",
            ));
        }
        if e.wait_poll_max_ms < e.wait_poll_ms {
            return Err(SettingsError::new(
                "engine.wait_poll_max_ms",
                "must be at least engine.wait_poll_ms",
            ));
        }
        if sspr_rollout::PilotDetailsRead::parse(&e.pilot_details).is_none() {
            return Err(SettingsError::new(
                "engine.pilot_details",
                "must be \"auto\", \"listing\" or \"per_user\"",
            ));
        }
        if e.report_page_size == 0 {
            return Err(SettingsError::new("engine.report_page_size", "must be at least 1"));
        }
        if !(1..=100).contains(&e.step_attempts) {
            return Err(SettingsError::new("engine.step_attempts", "must be 1 to 100"));
        }
        if e.retry_base_ms == 0 || e.retry_max_ms < e.retry_base_ms {
            return Err(SettingsError::new(
                "engine.retry_max_ms",
                "retry_base_ms must be at least 1 and retry_max_ms at least retry_base_ms",
            ));
        }
        let w = &self.webhooks;
        if !(1..=sspr_store::WEBHOOK_JOB_MAX_ATTEMPTS).contains(&w.max_attempts) {
            return Err(SettingsError::new("webhooks.max_attempts", "must be 1 to 100"));
        }
        if !(1..=300).contains(&w.timeout_secs) {
            return Err(SettingsError::new("webhooks.timeout_secs", "must be 1 to 300"));
        }
        if w.retry_base_ms == 0 || w.retry_max_ms < w.retry_base_ms {
            return Err(SettingsError::new(
                "webhooks.retry_max_ms",
                "retry_base_ms must be at least 1 and retry_max_ms at least retry_base_ms",
            ));
        }
        if w.workers == 0 {
            return Err(SettingsError::new("webhooks.workers", "must be at least 1"));
        }
        if w.idle_poll_ms == 0 {
            return Err(SettingsError::new("webhooks.idle_poll_ms", "must be at least 1 ms"));
        }
        Ok(())
    }

    /// The webhook sender's settings.
    pub fn webhook_settings(&self) -> sspr_reporting::webhooks::WebhookSettings {
        sspr_reporting::webhooks::WebhookSettings {
            max_attempts: self.webhooks.max_attempts,
            timeout: Duration::from_secs(self.webhooks.timeout_secs),
            allow_private_targets: self.webhooks.allow_private_targets,
            ..Default::default()
        }
    }

    /// The configuration of the worker that sends webhooks: its own queue, so a slow
    /// receiver never holds up rollout steps, and its own retry delays.
    pub fn webhook_worker_config(&self) -> sspr_queue::WorkerConfig {
        sspr_queue::WorkerConfig {
            id: format!("webhooks-{}-{:08x}", std::process::id(), rand::random::<u32>()),
            queue: sspr_store::WEBHOOK_QUEUE.into(),
            // An attempt takes at most the timeout; the lease covers it with room to spare.
            lease: Duration::from_secs(self.webhooks.timeout_secs.saturating_mul(3).max(30)),
            concurrency: self.webhooks.workers,
            backoff: sspr_queue::Backoff {
                base: Duration::from_millis(self.webhooks.retry_base_ms),
                max: Duration::from_millis(self.webhooks.retry_max_ms),
            },
            idle: Duration::from_millis(self.webhooks.idle_poll_ms),
            grace: Duration::from_secs(self.api.shutdown_timeout_secs.max(1)),
        }
    }

    /// The Graph client's configuration: base URLs and limits from these settings, everything
    /// else at the client's defaults.
    pub fn graph_config(&self) -> sspr_graph::GraphConfig {
        let mut cfg = sspr_graph::GraphConfig::new(&self.graph_url, &self.login_url);
        cfg.scope = self.graph.scope.clone();
        cfg.max_concurrency = self.graph.max_concurrency;
        cfg.per_tenant_concurrency = self.graph.per_tenant_concurrency;
        cfg.rate_share = self.graph.rate_share;
        cfg.app_share = self.graph.app_share;
        cfg.report_share = self.graph.report_share;
        cfg.member_add = self.graph.member_add;
        cfg.request_timeout = Duration::from_secs(self.graph.request_timeout_secs.max(1));
        cfg
    }

    /// The registry's settings.
    pub fn registry_settings(&self) -> sspr_registry::RegistrySettings {
        sspr_registry::RegistrySettings {
            verify_concurrency: self.registry.verify_concurrency,
            reverify_after: Duration::from_secs(self.registry.reverify_after_hours * 3600),
        }
    }

    /// The rollout engine's settings.
    pub fn engine_settings(&self) -> sspr_rollout::EngineSettings {
        sspr_rollout::EngineSettings {
            queue: "default".into(),
            poll: Duration::from_millis(self.engine.wait_poll_ms),
            poll_max: Duration::from_millis(self.engine.wait_poll_max_ms),
            pilot_details: sspr_rollout::PilotDetailsRead::parse(&self.engine.pilot_details)
                .unwrap_or_default(),
            report_page_size: self.engine.report_page_size,
            advance_every: Duration::from_millis(self.engine.advance_ms),
            step_attempts: self.engine.step_attempts,
            plan_concurrency: 4,
        }
    }

    /// The readiness reports' settings (their jobs go to the engine's queue).
    pub fn report_settings(&self) -> sspr_reporting::readiness::ReportSettings {
        sspr_reporting::readiness::ReportSettings {
            queue: "default".into(),
            refresh_after: Duration::from_secs(self.reporting.refresh_hours.saturating_mul(3600)),
            check_every: Duration::from_secs(self.reporting.check_every_secs),
            ..sspr_reporting::readiness::ReportSettings::default()
        }
    }

    /// The job worker's configuration.
    pub fn worker_config(&self) -> sspr_queue::WorkerConfig {
        sspr_queue::WorkerConfig {
            queue: "default".into(),
            lease: Duration::from_secs(self.engine.lease_secs),
            concurrency: self.engine.workers,
            backoff: sspr_queue::Backoff {
                base: Duration::from_millis(self.engine.retry_base_ms),
                max: Duration::from_millis(self.engine.retry_max_ms),
            },
            idle: Duration::from_millis(self.engine.idle_poll_ms),
            grace: Duration::from_secs(self.api.shutdown_timeout_secs.max(1)),
            ..sspr_queue::WorkerConfig::default()
        }
    }

    /// Pool settings for the store.
    pub fn store_options(&self) -> sspr_store::StoreOptions {
        sspr_store::StoreOptions {
            max_connections: self.database.max_connections,
            sqlite_readers: self.database.sqlite_readers.max(1),
            acquire_timeout: Duration::from_secs(self.database.acquire_timeout_secs.max(1)),
        }
    }

    /// The effective settings as TOML, with secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut value =
            toml::Value::try_from(self).unwrap_or(toml::Value::Table(Default::default()));
        if let Some(table) = value.as_table_mut() {
            table.insert("database_url".into(), toml::Value::String(mask_url(self)));
            if self.master_key.is_some() {
                table.insert("master_key".into(), toml::Value::String("***".into()));
            }
        }
        toml::to_string_pretty(&value).unwrap_or_default()
    }
}

fn serialize_masked<S: serde::Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("***")
}

/// The database URL with any password replaced, for logs, errors and `config`.
pub fn mask_url(settings: &Settings) -> String {
    use secrecy::ExposeSecret;
    mask_database_url(settings.database_url.expose_secret())
}

/// `url` with every password replaced by `***`: the one in the user information
/// (`user:password@host`, percent-encoded or not, even with a raw `@` in it) and the value of
/// every query parameter whose name contains `password` in any case (`password=`,
/// `sslpassword=`). Everything else (user, host, port, database, other options) is kept.
pub fn mask_database_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.find("://") {
        // The last `@` before the query ends the user information (as URL parsers read it).
        Some(scheme_end) => match base[scheme_end + 3..].rfind('@') {
            Some(at) => {
                let at = scheme_end + 3 + at;
                let userinfo = &base[scheme_end + 3..at];
                let masked = match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***"),
                    None => userinfo.to_owned(),
                };
                format!("{}{masked}{}", &base[..scheme_end + 3], &base[at..])
            }
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                    format!("{key}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn database_passwords_are_masked_wherever_they_are_written() {
        for (url, masked) in [
            ("postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:p%40w@h/db?sslmode=require", "postgres://u:***@h/db?sslmode=require"),
            (
                "postgres://u:p@w@h/db?application_name=a@b",
                "postgres://u:***@h/db?application_name=a@b",
            ),
            (
                "postgres://u@h/db?password=pw&sslmode=require",
                "postgres://u@h/db?password=***&sslmode=require",
            ),
            (
                "postgresql://h/db?user=u&PassWord=pw&sslpassword=k",
                "postgresql://h/db?user=u&PassWord=***&sslpassword=***",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("sqlite://data/sspr-fleet.db", "sqlite://data/sspr-fleet.db"),
        ] {
            assert_eq!(mask_database_url(url), masked, "{url}");
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.database_url.expose_secret(), "sqlite://sspr-fleet.db");
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.graph_url, "https://graph.microsoft.com");
        assert_eq!(s.login_url, "https://login.microsoftonline.com");
        assert_eq!(s.log_format, LogFormat::Text);
        assert!(s.master_key.is_none() && s.master_key_file.is_none());
        assert!(!s.webhooks.allow_private_targets, "webhooks go only to public targets");
        assert!(!s.webhook_settings().allow_private_targets);
        let s = Settings::load_from(
            None,
            env(&[("SSPR_FLEET_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")]),
        )
        .unwrap();
        assert!(s.webhook_settings().allow_private_targets);
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9000\"\ngraph_url = \"http://sim:1\"\n[api]\nmax_body_bytes = 4096\n").unwrap();
        let s = Settings::load_from(
            Some(&file),
            env(&[
                ("SSPR_FLEET_LISTEN", "127.0.0.1:9100"),
                ("SSPR_FLEET_API__WORKERS", "3"),
                ("SSPR_FLEET_LOG_FORMAT", "json"),
                ("SSPR_FLEET_TEST_DATABASE_URL", "postgres://ignored"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(s.graph_url, "http://sim:1");
        assert_eq!(s.api.max_body_bytes, 4096);
        assert_eq!(s.api.workers, 3);
        assert_eq!(s.log_format, LogFormat::Json);
    }

    #[test]
    fn errors_name_the_setting_and_its_variable() {
        let err = Settings::load_from(None, env(&[("SSPR_FLEET_DATABASE__MAX_CONNECTIONS", "0")]))
            .unwrap_err();
        assert_eq!(err.key, "database.max_connections");
        assert_eq!(err.env, "SSPR_FLEET_DATABASE__MAX_CONNECTIONS");
        let err = Settings::load_from(
            None,
            env(&[("SSPR_FLEET_MASTER_KEY", "AAAA"), ("SSPR_FLEET_MASTER_KEY_FILE", "/x")]),
        )
        .unwrap_err();
        assert_eq!(err.key, "master_key");
        let err = Settings::load_from(None, env(&[("SSPR_FLEET_LOG", "info,[[[")])).unwrap_err();
        assert_eq!(err.env, "SSPR_FLEET_LOG");
        let err =
            Settings::load_from(None, env(&[("SSPR_FLEET_API__RATE_BURST", "0")])).unwrap_err();
        assert_eq!(err.env, "SSPR_FLEET_API__RATE_BURST");
        // A rate of 0 switches limiting off, whatever the burst.
        let s = Settings::load_from(
            None,
            env(&[("SSPR_FLEET_API__RATE_PER_SECOND", "0"), ("SSPR_FLEET_API__RATE_BURST", "0")]),
        )
        .unwrap();
        assert_eq!((s.api.rate_per_second, s.api.rate_burst), (0, 0));
    }

    #[test]
    fn printed_settings_hide_secrets() {
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [3u8; 32]);
        let s = Settings::load_from(
            None,
            env(&[
                ("SSPR_FLEET_DATABASE_URL", "postgres://fleet:hunter2@db:5432/fleet"),
                ("SSPR_FLEET_MASTER_KEY", &key),
            ]),
        )
        .unwrap();
        let text = s.to_masked_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains(&key), "{text}");
        assert!(text.contains("postgres://fleet:***@db:5432/fleet"), "{text}");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn the_example_deployment_config_is_valid() {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/sspr-fleet.example.toml");
        let s = Settings::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(
            sspr_store::Backend::from_url(s.database_url.expose_secret()).unwrap(),
            sspr_store::Backend::Postgres
        );
    }

    #[test]
    fn the_graph_client_takes_its_urls_and_limits_from_settings() {
        let s = Settings::load_from(
            None,
            env(&[
                ("SSPR_FLEET_GRAPH_URL", "https://graph.microsoft.us/"),
                ("SSPR_FLEET_LOGIN_URL", "https://login.microsoftonline.us"),
                ("SSPR_FLEET_GRAPH__SCOPE", "https://graph.microsoft.us/.default"),
                ("SSPR_FLEET_GRAPH__MAX_CONCURRENCY", "16"),
            ]),
        )
        .unwrap();
        let cfg = s.graph_config();
        assert_eq!(cfg.graph_url, "https://graph.microsoft.us");
        assert_eq!(cfg.login_url, "https://login.microsoftonline.us");
        assert_eq!(cfg.scope, "https://graph.microsoft.us/.default");
        assert_eq!(cfg.max_concurrency, 16);
        let err =
            Settings::load_from(None, env(&[("SSPR_FLEET_GRAPH__RATE_SHARE", "1.5")])).unwrap_err();
        assert_eq!(err.env, "SSPR_FLEET_GRAPH__RATE_SHARE");
    }

    #[test]
    fn env_names_follow_the_nesting_rule() {
        assert_eq!(env_name("listen"), "SSPR_FLEET_LISTEN");
        assert_eq!(env_name("api.max_body_bytes"), "SSPR_FLEET_API__MAX_BODY_BYTES");
    }
}
