//! The `dcp` command line.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::{
    config::{Config, Overrides},
    store, telemetry,
};

/// DCP: get machines, run commands on fleets, deploy and scale container services.
#[derive(Debug, Parser)]
#[command(name = "dcp", version, about)]
pub struct Cli {
    /// TOML configuration file (see dcp.example.toml) [env: DCP_CONFIG]
    #[arg(long, global = true, env = "DCP_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API and web UI (applies migrations first).
    Serve(Overrides),
    /// Apply pending database migrations and exit.
    Migrate(Overrides),
    /// Print the version.
    Version,
    /// Check that a component compiles and fits DCP's plugin contract;
    /// prints its world (DCP runs this, isolated, on every upload).
    CheckPlugin {
        /// The component (.wasm).
        file: PathBuf,
    },
}

/// Runs the command line; the process's exit status follows the result.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    let overrides = match &cli.command {
        Command::Version => {
            println!("dcp {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Command::CheckPlugin { file } => return check_plugin(file),
        Command::Serve(o) | Command::Migrate(o) => o,
    };
    let config = Config::load(cli.config.as_deref(), overrides).context("loading configuration")?;
    telemetry::init_logging(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match &cli.command {
            Command::Serve(_) => crate::serve(config).await,
            Command::Migrate(_) => {
                let url = config.database_url();
                let store = store::Store::open(&url)
                    .await
                    .with_context(|| format!("migrating {}", store::redact_url(&url)))?;
                store.close().await;
                tracing::info!("migrations applied");
                Ok(())
            }
            Command::Version | Command::CheckPlugin { .. } => Ok(()),
        }
    })
}

fn check_plugin(file: &std::path::Path) -> anyhow::Result<()> {
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = crate::plugins::Runtime::on_demand()?;
    let plugin = runtime
        .load("checked", "0.0.0", &wasm)
        .map_err(|e| anyhow::anyhow!("{}", e.failure))?;
    println!(
        "{}: a {} plugin of {}",
        file.display(),
        plugin.world,
        crate::plugins::World::PACKAGE
    );
    Ok(())
}
