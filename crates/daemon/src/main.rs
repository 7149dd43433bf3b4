//! The `sspr-fleet` command line.

// Printing results on stdout is what a command line is for; logs go to stderr.
#![allow(clippy::print_stdout)]

use std::{collections::BTreeSet, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use sspr_api::keys::{NewKey, issue_api_key_from_cli};
use sspr_domain::{Role, SystemClock, TenantId, TenantScope};
use sspr_fleet::{Application, cancel_on_signal, open_store, settings::Settings, telemetry};
use tokio_util::sync::CancellationToken;

/// Staged Self-Service Password Reset rollouts across Microsoft 365 customer tenants.
///
/// Settings come from the embedded defaults, then `--config FILE`, then SSPR_FLEET_*
/// environment variables (see `sspr-fleet config` for the effective values).
#[derive(Debug, Parser)]
#[command(name = "sspr-fleet", version, about, long_about)]
struct Cli {
    /// A TOML file of settings, applied over the defaults and under the environment.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: migrate the database, then serve the REST API until SIGINT or SIGTERM.
    ///
    /// On first start with no master key configured, generates one in the data directory.
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Print the OpenAPI 3.1 document of the REST API (the content of openapi/openapi.json).
    Openapi,
    /// Print the effective settings as TOML, with secrets masked.
    Config,
    /// See the whole product in two minutes, with nothing configured: a simulated fleet, the
    /// daemon on a throwaway database, and a staged SSPR rollout over the REST API.
    ///
    /// Starts the built-in Graph simulator with N simulated tenants of mixed readiness,
    /// onboards them, plans and runs a rollout (canary tenants, then waves; pilot group, then
    /// everyone), shows progress per wave, and ends with a summary. Prints the API address, an
    /// admin key and the status page while it runs. The portal step Microsoft offers no API
    /// for is attested automatically here; real tenants need a technician.
    Demo {
        /// Simulated tenants.
        #[arg(long, default_value_t = 25)]
        tenants: u32,
        /// Pace: 2 runs the engine's polls and simulated time twice as fast.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Seed of the simulated fleet (the same seed gives the same tenants).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Leave the API and the simulator up after the rollout, until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
    },
    /// Run the Graph simulator standalone: a simulated Microsoft Graph and token endpoint
    /// for many tenants, with its control API under `/_sim`.
    ///
    /// Point sspr-fleet at it with SSPR_FLEET_GRAPH_URL and SSPR_FLEET_LOGIN_URL set to its
    /// address. The scenario format is documented in docs/graph-sim.md.
    GraphSim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        /// A scenario file (TOML, or JSON if it starts with `{`). Without one, `--tenants`
        /// generated tenants are simulated.
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
        /// Number of generated tenants when no scenario is given.
        #[arg(long, default_value_t = 25)]
        tenants: u32,
        /// Seed of the generated fleet.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Manage API keys and the master key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage customer tenants.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// Import tenants from a CSV or JSON file, as `POST /v1/tenants:import` does: row by row,
    /// each with its outcome; importing the same file again changes nothing.
    ///
    /// CSV columns: entra_tenant, display_name, tags (`;`-separated), external_refs
    /// (`name=value;...`), kind (client_secret or certificate), client_id, client_secret,
    /// certificate_pem, private_key_pem. A file whose name ends in `.json` is read as JSON (an
    /// array of onboarding bodies). Shows progress on stderr; prints one line per row that was
    /// not created, and a summary. Exits 1 when any row failed.
    Import {
        /// The file to import.
        file: PathBuf,
        /// Check every row without storing anything.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an API key and print it, alone, on stdout. It is shown only this once.
    ///
    /// Example: `TOKEN=$(sspr-fleet keys create --name psa --role operator)`.
    Create {
        /// Who will use the key, e.g. `connectwise-prod`.
        #[arg(long)]
        name: String,
        /// What it may do: `viewer` (read), `operator` (also run rollouts), `admin` (also keys).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Restrict the key to this tenant (`ten_...`); repeat for several. Default: every tenant.
        #[arg(long = "tenant", value_name = "ID", value_parser = parse_tenant)]
        tenants: Vec<TenantId>,
    },
    /// Rotate the master key: generate a new one, re-encrypt every stored secret with it, and
    /// put it in place of the old key file (the old key is kept beside it as
    /// `<file>.retired.<id>`). Safe to run again if interrupted. Restart running replicas
    /// afterwards so they load the new key.
    RotateMaster,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse().map_err(|e: sspr_domain::RoleParseError| e.to_string())
}

fn parse_tenant(text: &str) -> Result<TenantId, String> {
    text.parse().map_err(|e: sspr_domain::IdParseError| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        // Needs no settings, no database and no runtime.
        print!("{}", sspr_api::openapi_json());
        return ExitCode::SUCCESS;
    }
    if let Command::GraphSim { listen, scenario, tenants, seed } = &cli.command {
        return run_graph_sim(*listen, scenario.as_deref(), *tenants, *seed);
    }
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Command::Demo { .. }) && std::env::var_os("SSPR_FLEET_LOG").is_none() {
        // The demo talks to people on the terminal; only problems are logged beside it.
        settings.log = "error".into();
    }
    if let Command::Config = cli.command {
        print!("{}", settings.to_masked_toml());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "exiting");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&settings.log, settings.log_format)?;
    match command {
        Command::Serve => {
            let shutdown = CancellationToken::new();
            cancel_on_signal(shutdown.clone()).context("cannot listen for signals")?;
            let app = Application::build(&settings).await?;
            app.run_until_stopped(shutdown).await
        }
        Command::Migrate => {
            let store = open_store(&settings).await?;
            store.close().await;
            Ok(())
        }
        Command::Keys { command: KeysCommand::Create { name, role, tenants } } => {
            let name = name.trim().to_owned();
            anyhow::ensure!(
                !name.is_empty() && name.chars().count() <= 100,
                "--name must be 1 to 100 characters"
            );
            let tenants = if tenants.is_empty() {
                TenantScope::All
            } else {
                TenantScope::Only(tenants.iter().map(ToString::to_string).collect::<BTreeSet<_>>())
            };
            let store = open_store(&settings).await?;
            let (key, token) =
                issue_api_key_from_cli(&store, &SystemClock, NewKey { name, role, tenants })
                    .await
                    .context("cannot create the key")?;
            tracing::info!(key_id = %key.id, role = %key.role, "API key created");
            store.close().await;
            // The key alone on stdout, so scripts can capture it.
            println!("{}", token.reveal());
            Ok(())
        }
        Command::Keys { command: KeysCommand::RotateMaster } => rotate_master(&settings).await,
        Command::Demo { tenants, speed, seed, keep_running } => {
            let shutdown = CancellationToken::new();
            cancel_on_signal(shutdown.clone()).context("cannot listen for signals")?;
            let opts = sspr_fleet::demo::DemoOptions { tenants, speed, seed, keep_running };
            let summary = sspr_fleet::demo::run(&settings, opts, shutdown).await?;
            anyhow::ensure!(
                summary.state == "completed",
                "the demo's rollout ended {} instead of completed",
                summary.state
            );
            Ok(())
        }
        Command::Tenants { command: TenantsCommand::Import { file, dry_run } } => {
            import_tenants(&settings, &file, dry_run).await
        }
        Command::Openapi | Command::Config | Command::GraphSim { .. } => Ok(()),
    }
}

/// `sspr-fleet keys rotate-master`.
async fn rotate_master(settings: &Settings) -> anyhow::Result<()> {
    use sspr_fleet::master_key;
    let store = open_store(settings).await?;
    let (_, old, source) = sspr_fleet::open_vault(settings)?;
    let file = master_key::key_file(&source)
        .context(
            "the master key comes from the master_key setting; rotation needs it in a file \
             (set master_key_file, or let sspr-fleet keep it in the data directory)",
        )?
        .to_owned();
    let new = master_key::begin_rotation(&file).map_err(|e| anyhow::anyhow!(e))?;
    let material = |k: &master_key::MasterKey| sspr_registry::MasterKeyMaterial {
        id: k.id().to_owned(),
        bytes: secrecy::SecretBox::new(Box::new(*k.expose())),
    };
    let mut previous = vec![material(&old)];
    previous.extend(
        master_key::companions(&file)
            .map_err(|e| anyhow::anyhow!(e))?
            .iter()
            .filter(|k| k.id() != new.id())
            .map(material),
    );
    let vault = sspr_registry::Vault::new(&material(&new), &previous);
    let report = sspr_registry::Registry::rewrap_all(&store, &vault)
        .await
        .context("cannot re-encrypt the stored secrets")?;
    let (_, webhooks_rewrapped) = sspr_reporting::webhooks::Webhooks::rewrap_all(&store, &vault)
        .await
        .context("cannot re-encrypt the webhook secrets")?;
    master_key::finish_rotation(&file, &old).map_err(|e| anyhow::anyhow!(e))?;
    store.close().await;
    tracing::info!(
        old = old.id(),
        new = new.id(),
        rewrapped = report.rewrapped,
        webhooks_rewrapped,
        "master key rotated"
    );
    println!(
        "master key rotated: {} -> {}; {} of {} stored credentials re-encrypted; restart running replicas",
        old.id(),
        new.id(),
        report.rewrapped,
        report.total
    );
    Ok(())
}

/// `sspr-fleet tenants import FILE`.
async fn import_tenants(
    settings: &Settings,
    file: &std::path::Path,
    dry_run: bool,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let json = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let rows =
        if json { sspr_registry::parse_json(&bytes) } else { sspr_registry::parse_csv(&bytes) }
            .with_context(|| format!("cannot import {}", file.display()))?;
    let store = open_store(settings).await?;
    let (vault, _, _) = sspr_fleet::open_vault(settings)?;
    let registry =
        sspr_fleet::build_registry(settings, &store, vault, std::sync::Arc::new(SystemClock))?;
    let bar = indicatif::ProgressBar::new(rows.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} importing [{bar:40}] {pos}/{len} rows ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let outcomes = registry
        .import(rows, dry_run, &|done, _| bar.set_position(done as u64))
        .await
        .context("the import stopped")?;
    bar.finish_and_clear();
    store.close().await;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for o in &outcomes {
        *counts.entry(o.outcome.as_str()).or_default() += 1;
        if !matches!(o.outcome.as_str(), "created" | "valid") {
            let errors: Vec<String> = o
                .errors
                .iter()
                .map(|e| format!("{}: {} ({})", e.field, e.message, e.code))
                .collect();
            println!(
                "row {}: {} {}{}{}",
                o.row,
                o.outcome,
                o.entra_tenant.as_deref().unwrap_or("-"),
                o.tenant_id.as_deref().map(|t| format!(" {t}")).unwrap_or_default(),
                if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) }
            );
        }
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "{} rows{}: {}",
        outcomes.len(),
        if dry_run { " (dry run)" } else { "" },
        summary.join(", ")
    );
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o.outcome.as_str(), "invalid" | "conflict" | "failed"))
        .count();
    anyhow::ensure!(failed == 0, "{failed} rows were not imported");
    Ok(())
}

/// `sspr-fleet graph-sim`: serves the simulator until SIGINT or SIGTERM.
fn run_graph_sim(
    listen: std::net::SocketAddr,
    scenario: Option<&std::path::Path>,
    tenants: u32,
    seed: u64,
) -> ExitCode {
    let scenario = match scenario {
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| sspr_graph_sim::Scenario::parse(&text).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(err) => {
                eprintln!("error: scenario {}: {err}", path.display());
                return ExitCode::from(2);
            }
        },
        None => sspr_graph_sim::Scenario::generated(tenants, seed),
    };
    let sim = match sspr_graph_sim::GraphSim::from_scenario(&scenario) {
        Ok(sim) => sim,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let _telemetry = telemetry::init("info", sspr_fleet::settings::LogFormat::Text)?;
        let shutdown = CancellationToken::new();
        cancel_on_signal(shutdown.clone())?;
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen}"))?;
        let running = sim.serve(listener)?;
        tracing::info!(
            addr = %running.addr,
            tenants = sim.tenant_ids().len(),
            client_id = sspr_graph_sim::scenario::DEFAULT_CLIENT_ID,
            "Graph simulator serving: set SSPR_FLEET_GRAPH_URL and SSPR_FLEET_LOGIN_URL to {}",
            running.base_url()
        );
        shutdown.cancelled().await;
        running.stop().await;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn keys_create_parses_role_and_repeated_tenants() {
        let t1 = TenantId::new();
        let t2 = TenantId::new();
        let cli = Cli::try_parse_from([
            "sspr-fleet",
            "keys",
            "create",
            "--name",
            "psa",
            "--role",
            "viewer",
            "--tenant",
            t1.as_str(),
            "--tenant",
            t2.as_str(),
        ])
        .unwrap();
        match cli.command {
            Command::Keys { command: KeysCommand::Create { role, tenants, .. } } => {
                assert_eq!(role, Role::Viewer);
                assert_eq!(tenants, vec![t1, t2]);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(
            Cli::try_parse_from(["sspr-fleet", "keys", "create", "--name", "x", "--role", "root"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "sspr-fleet",
                "keys",
                "create",
                "--name",
                "x",
                "--role",
                "admin",
                "--tenant",
                "nope"
            ])
            .is_err()
        );
    }
}
