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
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
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
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
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
        Command::Openapi | Command::Config | Command::GraphSim { .. } => Ok(()),
    }
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
